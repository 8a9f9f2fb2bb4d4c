import ArgumentParser
import Foundation
import PCIBinding
import PCIInventory

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show everything about one PCI device: identity, driver, group, BARs, bridges, ACS, SR-IOV.",
        discussion: """
            Example:
              vfioctl show 01:00.0
              vfioctl show 0000:01:00.0 --json
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address"))
    var address: PCIAddress
    // The root of /proc, for tests on copied trees; not for everyday use.
    @Option(name: .long, help: .hidden) var procRoot: String = "/proc"

    func run() throws {
        let target = address
        let inventory = try InventoryLoader.load(global, detail: .full)
        let device = try InventoryLoader.device(target, in: inventory)
        let root = global.resolvedRoot
        let holders = HolderReader(sysfs: root, procRoot: procRoot, devRoot: root.isSystem ? "/dev" : nil).holders(of: [target])[target] ?? []
        if global.json {
            var detail = JSONValue.deviceDetail(device, in: inventory)
            if case .object(let pairs) = detail { detail = .object(pairs + [("holders", HolderReport.json(holders))]) }
            print(detail.rendered())
            return
        }
        for line in Self.describe(device, in: inventory) + HolderReport.lines(holders) { print(line) }
        if !inventory.iommu.isAvailable {
            print("")
            for line in inventory.iommu.advice { print("note: \(line)") }
        }
    }

    static func describe(_ device: PCIDevice, in inventory: PCIInventory) -> [String] {
        var lines = [TextFormat.listLine(device)]
        func field(_ name: String, _ value: String) { lines.append("  " + name.padding(toLength: 17, withPad: " ", startingAt: 0) + value) }
        if let subVendor = device.subsystemVendorID, let subDevice = device.subsystemDeviceID {
            let name = [device.names.subsystemVendor, device.names.subsystem].compactMap { $0 }.joined(separator: " ")
            field("Subsystem:", (name.isEmpty ? "" : name + " ") + "[\(hexID(subVendor) ?? ""):\(hexID(subDevice) ?? "")]")
        }
        if let progIf = device.names.programmingInterface { field("Prog-if:", progIf) }
        field("Driver:", device.driver ?? "none")
        if let override = device.driverOverride { field("driver_override:", override) }
        if let groupID = device.iommuGroup, let group = inventory.group(groupID) {
            field("IOMMU group:", "\(groupID) (" + (group.isViable ? "viable" : "not viable") + ")")
            let siblings = group.devices.filter { $0 != device.address }
            for sibling in siblings {
                lines.append("    sibling " + (inventory.device(sibling).map(TextFormat.listLine) ?? sibling.description))
            }
            for blocker in group.blockers { lines.append("    blocks: \(blocker.address): \(blocker.reason)") }
        } else {
            field("IOMMU group:", device.iommuGroup.map { "\($0) (no such group directory)" } ?? "none")
        }
        field("Device file:", device.vfioDeviceFile.map { "/dev/vfio/devices/\($0)" } ?? "none")
        for companion in inventory.companions(of: device.address) {
            field("Companion:", "\(companion.address) " + (companion.names.className ?? "function") + ", driver \(companion.driver ?? "none"), group " + (companion.iommuGroup.map(String.init) ?? "none"))
        }
        if let portType = device.expressPortType { field("PCIe type:", portType.name) }
        field("Reset methods:", device.resetMethods.isEmpty ? "none" : device.resetMethods.joined(separator: " "))
        if let bootVGA = device.bootVGA { field("Boot display:", bootVGA ? "yes (boot_vga=1)" : "no") }
        field("NUMA node:", device.numaNode.map(String.init) ?? "none")
        field("Local CPUs:", device.localCPUs ?? "unknown")
        field("Root port:", device.rootPort?.description ?? "none (on the root bus)")
        field("Root complex:", device.rootComplex ?? "unknown")
        if device.bars.isEmpty { field("BARs:", "none") }
        for bar in device.bars { lines.append("  " + TextFormat.barLine(bar)) }
        lines += device.resizableBARs.map { "  " + TextFormat.resizableBARLine($0) }
        if let rom = device.rom { lines.append("  " + TextFormat.barLine(rom)) }
        if let acs = device.accessControlServices {
            field("ACS:", "supported " + acs.supported.names.joined(separator: " ") + "; enabled " + (acs.enabled.isEmpty ? "none" : acs.enabled.names.joined(separator: " ")))
        }
        if device.parentBridges.isEmpty {
            field("Upstream:", "root bus")
        } else {
            lines.append("  Upstream bridges (nearest first):")
            for address in device.parentBridges {
                let bridge = inventory.device(address)
                var text = "    \(address)"
                if let type = bridge?.expressPortType { text += " " + type.name }
                if let driver = bridge?.driver { text += ", driver \(driver)" }
                if let acs = bridge?.accessControlServices {
                    text += ", ACS enabled: " + (acs.enabled.isEmpty ? "none" : acs.enabled.names.joined(separator: " "))
                    text += acs.isolates ? " (isolates)" : " (does not isolate)"
                } else {
                    text += ", no ACS capability"
                }
                lines.append(text)
            }
        }
        if let sriov = device.sriov {
            field("SR-IOV:", "\(sriov.enabledVFs ?? 0) of \(sriov.totalVFs ?? 0) VFs enabled")
            for vf in sriov.virtualFunctions {
                let function = inventory.device(vf)
                lines.append("    VF \(vf)  group " + (function?.iommuGroup.map(String.init) ?? "-") + "  driver " + (function?.driver ?? "-"))
            }
        }
        if let physfn = device.physicalFunction { field("SR-IOV PF:", physfn.description) }
        for problem in device.problems { lines.append("  warning: \(problem)") }
        return lines
    }
}
