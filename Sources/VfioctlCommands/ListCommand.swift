import ArgumentParser
import Foundation
import PCIInventory
import TextFormat

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List PCI devices with their driver and IOMMU group.",
        discussion: """
            One line per device, like `lspci -D -nn -k`, plus its IOMMU group.

            Example:
              vfioctl list
              vfioctl list --json | jq '.[] | select(.driver == "vfio-pci") | .address'
            """
    )
    @OptionGroup var global: GlobalOptions

    func run() throws {
        let inventory = try InventoryLoader.load(global, detail: .summary)
        if global.json {
            JSONValue.array(inventory.devices.map(JSONValue.deviceSummary)).printToStandardOutput()
        } else {
            for device in inventory.devices { print(TextFormat.listLine(device) + TextFormat.topologySuffix(device)) }
        }
        InventoryLoader.reportTreeProblems(inventory, json: global.json, devicesProblems: true)
        InventoryLoader.reportMissingIOMMU(inventory, json: global.json)
    }
}

enum TextFormat {
    /// `0000:00:02.0 VGA compatible controller [0300]: Intel Corporation ... [8086:3e92] (rev 02) group 3 driver i915`
    static func listLine(_ device: PCIDevice) -> String {
        var line = device.address.description + " " + classText(device) + ": " + identityText(device)
        if let revision = device.revision, revision != 0 { line += " (rev " + hex2(revision) + ")" }
        line += "  group " + (device.iommuGroup.map(String.init) ?? "-")
        line += "  driver " + (device.driver ?? "-")
        // The VFIO device file (iommufd's way in), only where the kernel made one.
        if let file = device.vfioDeviceFile { line += "  cdev " + file }
        return line
    }

    /// `  numa 0  cpus 0-7  root-port 0000:00:01.0`: where the device sits, for `list`.
    static func topologySuffix(_ device: PCIDevice) -> String {
        "  numa " + (device.numaNode.map(String.init) ?? "-") + "  cpus " + (device.localCPUs ?? "-")
            + "  root-port " + (device.rootPort?.description ?? "-")
    }

    static func classText(_ device: PCIDevice) -> String {
        guard let classCode = device.classCode else { return "Unknown class [????]" }
        let code = hex4(UInt16(truncatingIfNeeded: classCode >> 8))
        return (device.names.className ?? "Class \(code)") + " [\(code)]"
    }

    static func identityText(_ device: PCIDevice) -> String {
        let vendorID = hexID(device.vendorID) ?? "????"
        let deviceID = hexID(device.deviceID) ?? "????"
        // lspci's wording when pci.ids has no name.
        let vendor = device.names.vendor ?? "Vendor \(vendorID)"
        let name = device.names.device ?? "Device"
        return "\(vendor) \(name) [\(vendorID):\(deviceID)]"
    }

    static func size(_ bytes: UInt64) -> String {
        let units: [(UInt64, String)] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")]
        for (unit, suffix) in units where bytes >= unit && bytes % unit == 0 {
            return "\(bytes / unit)\(suffix)"
        }
        return "\(bytes)"
    }

    static func barLine(_ bar: PCIBAR) -> String {
        let name = bar.index == PCIBAR.romIndex ? "ROM " : "BAR\(bar.index)"
        var attributes: [String] = [bar.kind == .io ? "I/O" : "memory"]
        if bar.kind == .memory { attributes.append(bar.is64Bit ? "64-bit" : "32-bit") }
        if bar.prefetchable { attributes.append("prefetchable") }
        if bar.unassigned { attributes.append("unassigned") }
        return String(format: "%@ 0x%016llx-0x%016llx [size=%@] %@", name, bar.start, bar.end,
                      size(bar.size), attributes.joined(separator: ", "))
    }

    /// "Resizable BAR1: 256 MiB now; supports 256 MiB-32 GiB (8 sizes) through resource1_resize".
    static func resizableBARLine(_ entry: ResizableBAR) -> String {
        let sizes = entry.offeredSizes
        let range = sizes.count > 2 ? "\(byteCount(sizes[0]))-\(byteCount(sizes[sizes.count - 1])) (\(sizes.count) sizes)"
            : sizes.map { byteCount($0) }.joined(separator: ", ")
        return "Resizable BAR\(entry.index): \(entry.currentSize.map { byteCount($0) } ?? "size unknown") now; supports "
            + (range.isEmpty ? "no size" : range)
            + (entry.kernelSizes == nil ? "; no resource\(entry.index)_resize (the kernel cannot resize it)" : " through resource\(entry.index)_resize")
    }
}
