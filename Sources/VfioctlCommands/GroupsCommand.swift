import ArgumentParser
import PCIInventory

struct GroupsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "groups",
        abstract: "Show IOMMU groups, whether each can be handed to VFIO, and what blocks it.",
        discussion: """
            A group is viable when every member is bound to vfio-pci, pci-stub or no driver \
            (bridges may stay on pcieport/shpchp). Each blocking member is named with the reason.

            Example:
              vfioctl groups
              vfioctl groups --json | jq '.[] | select(.viable | not)'
            """
    )
    @OptionGroup var global: GlobalOptions

    func run() throws {
        let inventory = try InventoryLoader.load(global, detail: .summary)
        if global.json {
            JSONValue.array(inventory.groups.map { group in
                guard case .object(let pairs) = JSONValue.group(group) else { return JSONValue.group(group) }
                let files = group.devices.map { ($0.description, JSONValue.optional(inventory.device($0)?.vfioDeviceFile)) }
                return .object(pairs + [("companions_elsewhere", .array(inventory.companionsOutside(group).map { .string($0.address.description) })),
                                        ("vfio_device_files", .object(files))])
            }).printToStandardOutput()
        } else {
            for group in inventory.groups {
                print("IOMMU group \(group.id): " + (group.isViable ? "viable" : "not viable"))
                for address in group.devices {
                    if let device = inventory.device(address) {
                        print("  " + TextFormat.listLine(device))
                    } else {
                        print("  \(address) (not on the PCI bus)")
                    }
                }
                for name in group.otherMembers { print("  \(name) (non-PCI)") }
                for blocker in group.blockers { print("  blocks: \(blocker.address): \(blocker.reason)") }
                for companion in inventory.companionsOutside(group) {
                    print("  companion in group \(companion.iommuGroup.map(String.init) ?? "none"): \(companion.address) (\(companion.driver ?? "no driver")); bind both with `vfioctl bind \(companion.address) --slot`")
                }
            }
            let unviable = inventory.groups.filter { !$0.isViable }.count
            if inventory.iommu.isAvailable {
                print("\(inventory.groups.count) groups, \(inventory.groups.count - unviable) viable, \(unviable) not viable")
            }
        }
        InventoryLoader.reportTreeProblems(inventory, json: global.json, devicesProblems: false)
        InventoryLoader.reportMissingIOMMU(inventory, json: global.json)
    }
}
