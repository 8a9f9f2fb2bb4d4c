/// Everything vfioctl knows about one PCI function, read from sysfs.
public struct PCIDevice: Sendable {
    /// The device's address (its sysfs directory name).
    public let address: PCIAddress
    /// `vendor`; nil when missing or malformed (see `problems`).
    public var vendorID: UInt16?
    /// `device`.
    public var deviceID: UInt16?
    /// `subsystem_vendor`.
    public var subsystemVendorID: UInt16?
    /// `subsystem_device`.
    public var subsystemDeviceID: UInt16?
    /// The 24-bit class code: base class, sub-class, programming interface.
    public var classCode: UInt32?
    /// `revision`.
    public var revision: UInt8?
    /// Names from pci.ids, where a name database was given.
    public var names = PCIDeviceNames()
    /// The bound driver, from the `driver` link; nil when no driver is bound.
    public var driver: String?
    /// `driver_override`; nil when unset (the kernel prints "(null)").
    public var driverOverride: String?
    /// The `iommu_group` link's group number; nil without an IOMMU.
    public var iommuGroup: Int?
    /// The VFIO device file's name (vfioN, the node /dev/vfio/devices/vfioN), from the `vfio-dev/`
    /// directory the kernel makes for a device bound to vfio-pci with CONFIG_VFIO_DEVICE_CDEV;
    /// nil when there is none (a malformed entry is a problem, not a name).
    public var vfioDeviceFile: String?
    /// The BARs in use, from `resource`.
    public var bars: [PCIBAR] = []
    /// BARs the device can resize (Resizable BAR capability, with sysfs `resourceN_resize`);
    /// read with full detail.
    public var resizableBARs: [ResizableBAR] = []
    /// The expansion ROM, if the device has one.
    public var rom: PCIBAR?
    /// The `resource` file could not be read: `bars` and `rom` are unknown, not absent.
    public var resourceFileUnreadable = false
    /// `reset_method`, in the kernel's order of preference; empty when the device has none.
    public var resetMethods: [String] = []
    /// Only VGA-class devices have `boot_vga`; nil for others.
    public var bootVGA: Bool?
    /// nil when the platform reports no NUMA affinity (-1).
    public var numaNode: Int?
    /// `local_cpulist`: the CPUs nearest the device ("0-7,16-23"); nil when absent or malformed.
    public var localCPUs: String?
    /// Bridges between this device and its root bus, nearest first (the last is the root port).
    public var parentBridges: [PCIAddress] = []
    /// The root complex the device hangs below, as sysfs names it ("pci0000:00").
    public var rootComplex: String?
    /// Set for an SR-IOV physical function: its VFs.
    public var sriov: SRIOVPhysicalFunction?
    /// Set for an SR-IOV virtual function: its physical function.
    public var physicalFunction: PCIAddress?
    /// The PCIe port type, from config space (full detail only).
    public var expressPortType: PCIExpressPortType?
    /// The ACS capability, from config space (full detail only).
    public var accessControlServices: ACSStatus?
    /// Where the device's sysfs data was incomplete or malformed, in words a user can act on.
    public var problems: [String] = []
    /// Why the device's driver binding could not be read (its directory or `driver` entry is
    /// unreadable); nil when it was read. A device in that state blocks its group.
    public var bindingUnknown: String?

    /// A device with only its address known.
    public init(address: PCIAddress) { self.address = address }

    /// Whether the device is on a VFIO driver: vfio-pci or a variant driver (nvgrace_gpu_vfio_pci,
    /// mlx5_vfio_pci...). The one rule for "this device is on VFIO" (`GroupViability.isVFIODriver`).
    public var isOnVFIO: Bool { driver.map(GroupViability.isVFIODriver) ?? false }

    /// Base class 0x06, sub-class 0x04: PCI-to-PCI bridge (root ports and switch ports too).
    public var isBridge: Bool { classCode.map { $0 >> 8 == 0x0604 } ?? false }
    /// Class 0x0600: a host bridge.
    public var isHostBridge: Bool { classCode.map { $0 >> 8 == 0x0600 } ?? false }
    /// The bridge on the root bus above the device (its PCIe root port); nil for a device on the root bus.
    public var rootPort: PCIAddress? { parentBridges.last }
    /// Base class 0x03: display controllers.
    public var isDisplay: Bool { classCode.map { $0 >> 16 == 0x03 } ?? false }
}

/// A device's names from pci.ids; nil where the database has none.
public struct PCIDeviceNames: Sendable, Equatable {
    /// The vendor's name.
    public var vendor: String?
    /// The device's name.
    public var device: String?
    /// The subsystem's name.
    public var subsystem: String?
    /// The subsystem vendor's name.
    public var subsystemVendor: String?
    /// The class name lspci prints.
    public var className: String?
    /// The programming interface's name.
    public var programmingInterface: String?
    /// No names.
    public init() {}
}

/// An SR-IOV physical function's virtual functions.
public struct SRIOVPhysicalFunction: Sendable, Equatable {
    /// `sriov_totalvfs`: the most VFs it can have.
    public var totalVFs: Int?
    /// `sriov_numvfs`: the VFs enabled now.
    public var enabledVFs: Int?
    /// The enabled VFs' addresses, from the `virtfnN` links.
    public var virtualFunctions: [PCIAddress]
    /// Why `totalVFs` is nil although the attribute exists (its text is not a count).
    public var totalVFsProblem: String? = nil
}
