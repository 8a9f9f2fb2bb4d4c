/// Everything vfioctl knows about one PCI function, read from sysfs.
public struct PCIDevice: Sendable {
    public let address: PCIAddress
    public var vendorID: UInt16?
    public var deviceID: UInt16?
    public var subsystemVendorID: UInt16?
    public var subsystemDeviceID: UInt16?
    /// The 24-bit class code: base class, sub-class, programming interface.
    public var classCode: UInt32?
    public var revision: UInt8?
    public var names = PCIDeviceNames()
    /// The bound driver, from the `driver` link; nil when no driver is bound.
    public var driver: String?
    /// `driver_override`; nil when unset (the kernel prints "(null)").
    public var driverOverride: String?
    public var iommuGroup: Int?
    public var bars: [PCIBAR] = []
    public var rom: PCIBAR?
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
    public var sriov: SRIOVPhysicalFunction?
    /// Set for an SR-IOV virtual function: its physical function.
    public var physicalFunction: PCIAddress?
    public var expressPortType: PCIExpressPortType?
    public var accessControlServices: ACSStatus?
    /// Where the device's sysfs data was incomplete or malformed, in words a user can act on.
    public var problems: [String] = []
    /// Why the device's driver binding could not be read (its directory or `driver` entry is
    /// unreadable); nil when it was read. A device in that state blocks its group.
    public var bindingUnknown: String?

    public init(address: PCIAddress) { self.address = address }

    /// Base class 0x06, sub-class 0x04: PCI-to-PCI bridge (root ports and switch ports too).
    public var isBridge: Bool { classCode.map { $0 >> 8 == 0x0604 } ?? false }
    /// The bridge on the root bus above the device (its PCIe root port); nil for a device on the root bus.
    public var rootPort: PCIAddress? { parentBridges.last }
    /// Base class 0x03: display controllers.
    public var isDisplay: Bool { classCode.map { $0 >> 16 == 0x03 } ?? false }
}

public struct PCIDeviceNames: Sendable, Equatable {
    public var vendor: String?
    public var device: String?
    public var subsystem: String?
    public var subsystemVendor: String?
    public var className: String?
    public var programmingInterface: String?
    public init() {}
}

public struct SRIOVPhysicalFunction: Sendable, Equatable {
    public var totalVFs: Int?
    public var enabledVFs: Int?
    public var virtualFunctions: [PCIAddress]
}
