#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import PCIInventory

/// The two ways VFIO hands a device to user space.
public enum VFIOBackend: String, Sendable, CaseIterable, Equatable {
    /// The legacy path: the device's group (/dev/vfio/N) set into a type1 container (/dev/vfio/vfio).
    case type1
    /// The device file (/dev/vfio/devices/vfioN) bound to an iommufd (/dev/iommu) and attached to an IOAS.
    case iommufd
}

/// Which backend a caller asks for: one of the two, or `auto` (iommufd where the host and the
/// device have it, else type1).
public enum VFIOBackendRequest: String, Sendable, CaseIterable, Equatable {
    /// iommufd where /dev/iommu and the device's file exist, else type1.
    case auto
    /// Always the group and type1 container.
    case type1
    /// Always iommufd; refused, naming the kernel option, where the host lacks it.
    case iommufd
}

/// What the host offers for one device, read before choosing a backend.
public struct VFIOBackendFacts: Sendable, Equatable {
    /// /dev/iommu exists (CONFIG_IOMMUFD).
    public var hasIOMMUFD: Bool
    /// /dev/vfio/vfio exists (CONFIG_VFIO_CONTAINER, or iommufd's compatibility container).
    public var hasContainer: Bool
    /// The device's VFIO device file name (vfioN), from sysfs `vfio-dev/`; nil when the kernel
    /// made none (no CONFIG_VFIO_DEVICE_CDEV, or the device is not bound to vfio-pci).
    public var deviceFile: String?
    /// The device's driver where it is not a VFIO driver ("none" for no driver): it then has no
    /// device file because it is not bound, not because the kernel lacks them. nil: on a VFIO
    /// driver, or not known.
    public var nonVFIODriver: String?

    /// Facts as given (tests, planners).
    public init(hasIOMMUFD: Bool, hasContainer: Bool, deviceFile: String?, nonVFIODriver: String? = nil) {
        self.hasIOMMUFD = hasIOMMUFD
        self.hasContainer = hasContainer
        self.deviceFile = deviceFile
        self.nonVFIODriver = nonVFIODriver
    }

    /// The device's driver under `sysfsRoot` when it is not a VFIO driver ("none" without one);
    /// nil when it is on one, or the device is not there.
    static func readNonVFIODriver(_ address: PCIAddress, sysfsRoot: String) -> String? {
        let reader = SysfsReader()
        let directory = "\(sysfsRoot)/bus/pci/devices/\(address)"
        guard reader.exists(directory) else { return nil }
        guard let driver = reader.readLinkBasename(directory + "/driver") else { return "none" }
        return GroupViability.isVFIODriver(driver) ? nil : driver
    }

    /// Why `address` has no device file: not bound to a VFIO driver (bind it), or a kernel
    /// without CONFIG_VFIO_DEVICE_CDEV.
    static func missingDeviceFile(_ address: PCIAddress, nonVFIODriver: String?) -> VFIOError {
        if let driver = nonVFIODriver { return .notBoundToVFIO(device: address.description, driver: driver) }
        return .iommufdUnavailable(device: address.description, missing: "CONFIG_VFIO_DEVICE_CDEV",
                                   detail: "the device is on vfio-pci but has no VFIO device file (no vfio-dev/ entry in sysfs)")
    }

    /// Reads the facts for `address`: nodes under `devRoot` (/dev), the device file under
    /// `sysfsRoot`. A malformed `vfio-dev/` entry throws rather than being guessed at.
    public static func read(_ address: PCIAddress, sysfsRoot: String = "/sys", devRoot: String = "/dev") throws(VFIOError) -> VFIOBackendFacts {
        let deviceFile = try VFIODeviceFile.name(of: address, sysfsRoot: sysfsRoot)
        return VFIOBackendFacts(hasIOMMUFD: access("\(devRoot)/iommu", F_OK) == 0,
                                hasContainer: access("\(devRoot)/vfio/vfio", F_OK) == 0,
                                deviceFile: deviceFile,
                                nonVFIODriver: deviceFile == nil ? readNonVFIODriver(address, sysfsRoot: sysfsRoot) : nil)
    }
}

extension VFIOBackendRequest {
    /// The backend to use for `device` with these host facts. Pure. `auto` takes iommufd only
    /// when both /dev/iommu and the device's file exist; `iommufd` without them is refused naming
    /// the kernel option that is missing.
    public func resolve(_ facts: VFIOBackendFacts, device: PCIAddress) throws(VFIOError) -> VFIOBackend {
        switch self {
        case .type1:
            return .type1
        case .auto:
            return facts.hasIOMMUFD && facts.deviceFile != nil ? .iommufd : .type1
        case .iommufd:
            guard facts.hasIOMMUFD else {
                throw .iommufdUnavailable(device: device.description, missing: "CONFIG_IOMMUFD",
                                          detail: "/dev/iommu does not exist")
            }
            guard facts.deviceFile != nil else {
                throw VFIOBackendFacts.missingDeviceFile(device, nonVFIODriver: facts.nonVFIODriver)
            }
            return .iommufd
        }
    }

    /// The backend to use for `device` on this host: type1 needs no host facts, so they are read
    /// (sysfs and /dev) only for auto and iommufd.
    public func resolve(_ device: PCIAddress, sysfsRoot: String = "/sys", devRoot: String = "/dev") throws(VFIOError) -> VFIOBackend {
        if self == .type1 { return .type1 }
        return try resolve(VFIOBackendFacts.read(device, sysfsRoot: sysfsRoot, devRoot: devRoot), device: device)
    }
}

/// The VFIO device file (cdev) of a PCI device: sysfs `bus/pci/devices/ADDR/vfio-dev/vfioN`
/// names /dev/vfio/devices/vfioN.
public enum VFIODeviceFile {
    /// Where the kernel puts device files.
    public static let devicesDirectory = "/dev/vfio/devices"

    /// Whether `name` is a device-file name the kernel writes (`VFIODeviceFileName.isValid`).
    public static func isValidName(_ name: String) -> Bool { VFIODeviceFileName.isValid(name) }

    /// The device's file name (vfioN), or nil when sysfs has no `vfio-dev/` directory for it.
    /// An entry that is not exactly one valid name throws `.malformedSysfs`.
    public static func name(of address: PCIAddress, sysfsRoot: String = "/sys") throws(VFIOError) -> String? {
        let device = "\(sysfsRoot)/bus/pci/devices/\(address)"
        do throws(VFIODeviceFileName.Malformed) {
            return try VFIODeviceFileName.read(deviceDirectory: device)
        } catch {
            throw .malformedSysfs(path: "\(device)/vfio-dev", reason: error.reason)
        }
    }
}
