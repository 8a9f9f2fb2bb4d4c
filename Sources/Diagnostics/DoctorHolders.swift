import PCIBinding
import PCIInventory

extension Doctor {
    /// Processes holding a device that passthrough would take or has taken: a GPU and the other
    /// functions of its slot (a bind is refused while they hold it, and an unbind of a GPU
    /// driver can hang on them), and devices on vfio-pci (a VM using them; unbinding waits for it).
    static func holders(_ host: HostReadiness) -> [Finding] {
        let inventory = host.inventory
        let gpuSlots = Set(inventory.devices.filter(\.isDisplay).map { "\($0.address.slot)" })
        var findings: [Finding] = []
        for device in inventory.devices {
            guard let holders = host.holders[device.address], !holders.isEmpty else { continue }
            let onVFIO = device.driver == BindPlan.targetDriver
            guard onVFIO || gpuSlots.contains("\(device.address.slot)") else { continue }
            let evidence = ["\(device.address), driver \(device.driver ?? "none")"] + holders.map(\.description)
            if onVFIO {
                findings.append(Finding(id: "holders.\(device.address)", status: .info,
                                        title: "\(device.address) is in use through VFIO",
                                        evidence: evidence,
                                        remedy: "`vfioctl unbind \(device.address)` is refused until the VM (or program) closes it; shut it down first"))
            } else {
                findings.append(Finding(id: "holders.\(device.address)", status: .warning,
                                        title: "Processes hold \(device.address)",
                                        evidence: evidence,
                                        remedy: "stop them before `vfioctl bind \(device.address)` (for nvidia: `systemctl stop nvidia-persistenced` and the display manager); bind refuses while they hold it"))
            }
        }
        return findings
    }
}
