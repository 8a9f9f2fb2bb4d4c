import Foundation
import PCIInventory

/// Loads the inventory for a command, turning failures into one-line errors.
enum InventoryLoader {
    static func load(_ global: GlobalOptions, detail: PCIInventory.Detail) throws -> PCIInventory {
        do {
            return try PCIInventory.scan(root: global.resolvedRoot, detail: detail, names: global.nameDatabase())
        } catch {
            throw CommandFailure(error.description)
        }
    }

    /// The device at `address`, or a one-line error that says where it was looked for.
    static func device(_ address: PCIAddress, in inventory: PCIInventory) throws -> PCIDevice {
        guard let device = inventory.device(address) else {
            throw CommandFailure("no PCI device \(address) under \(inventory.root.appending("bus/pci/devices")); run `vfioctl list` to see the devices")
        }
        return device
    }

    /// Tree-level and per-device damage goes to stderr so JSON on stdout stays parseable.
    static func reportTreeProblems(_ inventory: PCIInventory, json: Bool, devicesProblems: Bool) {
        for problem in inventory.problems { warn("warning: \(problem)") }
        // In text mode, per-device problems would otherwise be invisible; JSON carries them.
        guard devicesProblems, !json else { return }
        for device in inventory.devices {
            for problem in device.problems { warn("warning: \(device.address): \(problem)") }
        }
    }

    static func reportMissingIOMMU(_ inventory: PCIInventory, json: Bool) {
        guard !inventory.iommu.isAvailable else { return }
        if json {
            // JSON consumers get the lines on stderr, once, prefixed so they can be told apart.
            for line in inventory.iommu.advice { warn("note: \(line)") }
        } else {
            print("")
            for line in inventory.iommu.advice { print("note: \(line)") }
        }
    }
}

func warn(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
