// Prints each IOMMU group with its members and whether VFIO can use it, as JSON, using the
// PCIInventory library directly. Usage: inspect-groups [SYSFS_ROOT]
import Foundation
import PCIInventory

struct GroupReport: Encodable {
    let group: Int
    let viable: Bool
    let devices: [String]
    let blockers: [String]
}

let root = CommandLine.arguments.count > 1
    ? SysfsRoot(path: CommandLine.arguments[1])
    : SysfsRoot.resolve(option: nil, environment: ProcessInfo.processInfo.environment)
do {
    let inventory = try PCIInventory.scan(root: root, detail: .summary, names: PCINameDatabase())
    let reports = inventory.groups.map { group in
        GroupReport(group: group.id, viable: group.isViable,
                    devices: group.devices.map { address in
                        let device = inventory.device(address)
                        return "\(address) \(device?.names.device ?? "?") (driver \(device?.driver ?? "none"))"
                    },
                    blockers: group.blockers.map { "\($0.address): \($0.reason)" })
    }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(reports), as: UTF8.self))
    if !inventory.iommu.isAvailable {
        for line in inventory.iommu.advice { FileHandle.standardError.write(Data((line + "\n").utf8)) }
    }
} catch {
    FileHandle.standardError.write(Data("inspect-groups: \(error)\n".utf8))
    exit(1)
}
