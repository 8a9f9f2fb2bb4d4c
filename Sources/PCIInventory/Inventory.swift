/// A snapshot of the host's PCI devices and IOMMU groups, read from a sysfs root.
public struct PCIInventory: Sendable {
    /// How much to read per device. `summary` is what `list` and `groups` need; `full` adds
    /// config-space decoding (PCIe type, ACS), reset methods, NUMA, SR-IOV and names of
    /// subsystems.
    public enum Detail: Sendable { case summary, full }

    /// The sysfs root it was read from.
    public let root: SysfsRoot
    /// Devices in address order.
    public let devices: [PCIDevice]
    /// Groups in numeric order.
    public let groups: [IOMMUGroup]
    /// Whether the host has a usable IOMMU.
    public let iommu: IOMMUStatus
    /// Problems with the tree as a whole (an unreadable bus directory, a bad group entry).
    public let problems: [String]

    /// The device at `address`, if the inventory has it.
    public func device(_ address: PCIAddress) -> PCIDevice? {
        guard let index = indexByAddress[address] else { return nil }
        return devices[index]
    }

    /// IOMMU group `id`, if it exists.
    public func group(_ id: Int) -> IOMMUGroup? {
        groups.first { $0.id == id }
    }

    private let indexByAddress: [PCIAddress: Int]

    /// Reads the inventory. Never throws for damage inside the tree: a device whose files are
    /// missing or garbled is still listed, with `problems` saying what was wrong. Throws only
    /// when the PCI bus directory itself cannot be read.
    public static func scan(root: SysfsRoot, detail: Detail = .summary,
                            names: PCINameDatabase? = nil) throws(InventoryError) -> PCIInventory {
        let scanner = Scanner(root: root, detail: detail, names: names)
        return try scanner.run()
    }

    init(root: SysfsRoot, devices: [PCIDevice], groups: [IOMMUGroup], iommu: IOMMUStatus, problems: [String]) {
        self.root = root
        self.devices = devices
        self.groups = groups
        self.iommu = iommu
        self.problems = problems
        var index: [PCIAddress: Int] = [:]
        for (position, device) in devices.enumerated() { index[device.address] = position }
        self.indexByAddress = index
    }
}

/// Why an inventory could not be read at all.
public enum InventoryError: Error, Equatable, CustomStringConvertible {
    case busDirectoryUnreadable(path: String)

    /// What failed and what to check.
    public var description: String {
        switch self {
        case .busDirectoryUnreadable(let path):
            "cannot read \(path): is the sysfs root right? (set it with --sysfs-root or VFIOCTL_SYSFS_ROOT; the default is /sys)"
        }
    }
}

/// Whether the host has an IOMMU that VFIO can use, and what to check when it does not.
public struct IOMMUStatus: Sendable, Equatable {
    /// Entries of class/iommu (dmar0, ivhd0, ...): the IOMMU units the kernel registered.
    public let units: [String]
    /// IOMMU groups the kernel made.
    public let groupCount: Int
    /// The running kernel's command line, only when the sysfs root is the running system's.
    public let kernelCommandLine: String?

    /// Whether VFIO can be used: the kernel made IOMMU groups.
    public var isAvailable: Bool { groupCount > 0 }

    /// Why the lack of groups matters and what to check, in order; empty when groups exist.
    public var advice: [String] {
        guard !isAvailable else { return [] }
        var lines = ["No IOMMU groups: the kernel has no IOMMU enabled, so no device can be assigned with VFIO (it needs the IOMMU to confine a device's DMA to its VM)."]
        if let commandLine = kernelCommandLine {
            let parameters = commandLine.split(separator: " ")
            let iommuParameters = parameters.filter {
                $0.hasPrefix("intel_iommu=") || $0.hasPrefix("amd_iommu=") || $0.hasPrefix("iommu=")
            }
            if iommuParameters.isEmpty {
                lines.append("Kernel command line has no IOMMU parameter: add intel_iommu=on (Intel) or check amd_iommu is not off (AMD), then reboot.")
            } else {
                lines.append("Kernel command line has \(iommuParameters.joined(separator: " ")): make sure none of them is off/pt-only by mistake.")
            }
        } else {
            lines.append("Check the kernel command line (/proc/cmdline) for intel_iommu=on (Intel) or that amd_iommu is not off (AMD).")
        }
        lines.append("Check that the firmware (BIOS/UEFI) enables VT-d (Intel) or AMD-Vi/IOMMU (AMD).")
        if units.isEmpty {
            lines.append("/sys/class/iommu lists no IOMMU unit: the kernel found none (firmware off, or no IOMMU in this machine or VM).")
        } else {
            lines.append("/sys/class/iommu lists \(units.joined(separator: ", ")) but no groups exist: the IOMMU may be in passthrough-only or disabled mode.")
        }
        return lines
    }
}
