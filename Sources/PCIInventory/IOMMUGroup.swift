/// An IOMMU group: the smallest set of devices the IOMMU can isolate from each other. VFIO hands a
/// whole group to one user, so every member must be released by host drivers first.
public struct IOMMUGroup: Sendable {
    /// The group number (/sys/kernel/iommu_groups/N, /dev/vfio/N).
    public let id: Int
    /// PCI members in address order.
    public let devices: [PCIAddress]
    /// Members that are not PCI functions (platform devices on some hosts), by sysfs name.
    public let otherMembers: [String]
    /// The members that keep VFIO from using the group; empty when the group is viable.
    public let blockers: [GroupBlocker]

    /// Whether VFIO can take the group now: no member blocks it.
    public var isViable: Bool { blockers.isEmpty }
}

/// A group member that keeps VFIO from using the group, and why.
public struct GroupBlocker: Sendable, Equatable {
    /// The member's PCI address (or sysfs name for a non-PCI member).
    public let address: String
    /// Its driver; nil when none is bound or the binding could not be read.
    public let driver: String?
    /// Why it blocks the group, with what to do.
    public let reason: String
}

/// The kernel's rule for handing a group to VFIO: every member must have no driver or a driver
/// that leaves DMA to its user (vfio-pci and its variant drivers, pci-stub); bridges may keep
/// the port drivers, which do no DMA of their own.
public enum GroupViability {
    /// Drivers that leave DMA to their user.
    public static let userDrivers: Set<String> = ["vfio-pci", "pci-stub"]
    /// Port drivers a bridge may keep (they do no DMA of their own).
    public static let bridgeDrivers: Set<String> = ["pcieport", "shpchp"]

    /// Variant drivers (mlx5_vfio_pci, nvgrace_gpu_vfio_pci, ...) are VFIO drivers too.
    public static func isVFIODriver(_ driver: String) -> Bool {
        driver == "vfio-pci" || driver.hasSuffix("_vfio_pci") || driver.hasSuffix("-vfio-pci")
    }

    /// Whether a member bound to `driver` keeps the group from being viable: any driver but a
    /// VFIO driver (vfio-pci or a variant), pci-stub, or, for a bridge, a port driver.
    public static func blocks(driver: String, isBridge: Bool) -> Bool {
        if isVFIODriver(driver) || userDrivers.contains(driver) { return false }
        return !(isBridge && bridgeDrivers.contains(driver))
    }

    /// nil when the member does not block the group; otherwise why it does.
    public static func blockReason(for device: PCIDevice) -> String? {
        // Fail closed: a member whose binding cannot be read may be on a host driver.
        if let unknown = device.bindingUnknown {
            return "its driver cannot be read (\(unknown)); the group is not viable until it can"
        }
        guard let driver = device.driver, blocks(driver: driver, isBridge: device.isBridge) else { return nil }
        if device.isBridge {
            return "bridge bound to \(driver), which is not a port driver (pcieport, shpchp); unbind it"
        }
        return "bound to host driver \(driver); bind it to vfio-pci (or pci-stub), or unbind it"
    }

    /// Blockers of a group from its members' current drivers.
    /// `otherMembers` are non-PCI members with the driver each has bound (nil for none).
    public static func blockers(members: [PCIDevice], otherMembers: [(name: String, driver: String?)]) -> [GroupBlocker] {
        var blockers: [GroupBlocker] = []
        for device in members {
            if let reason = blockReason(for: device) {
                blockers.append(GroupBlocker(address: device.address.description, driver: device.driver, reason: reason))
            }
        }
        for member in otherMembers {
            guard let driver = member.driver else { continue }
            blockers.append(GroupBlocker(address: member.name, driver: driver,
                                         reason: "non-PCI member bound to \(driver); unbind it"))
        }
        return blockers
    }
}
