#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import PCIInventory
import SystemCalls
import SystemPackage

/// A VFIO group (/dev/vfio/N): the unit of ownership VFIO hands out, one IOMMU group. Modelled on
/// rust-vmm's `VFIOGroup`. Opening checks that the group is viable (no member bound to a host
/// driver); devices can be opened once the group is attached to a container. The descriptor is
/// closed exactly once, in deinit, which also detaches the group from its container.
public final class VFIOGroup {
    /// The IOMMU group number.
    public let number: Int
    /// The group's node (/dev/vfio/N).
    public let path: String
    let owned: OwnedFileDescriptor
    var fd: FileDescriptor { owned.borrowed }
    /// The container the group is attached to; held so the container outlives the group.
    public private(set) var container: VFIOContainer?
    /// The sysfs root the group was found under; devices read their BARs' resources from it.
    public private(set) var sysfsRoot = "/sys"

    /// Opens /dev/vfio/`number` and checks it is viable.
    /// `device` only makes the error clearer when the group node does not exist.
    public init(number: Int, devVFIO: String = "/dev/vfio", device: PCIAddress? = nil) throws(VFIOError) {
        let path = "\(devVFIO)/\(number)"
        let owned: OwnedFileDescriptor
        do throws(VFIOError) {
            owned = try openCharacterDevice(path)
        } catch {
            if case .system(_, .noSuchFileOrDirectory) = error {
                throw .groupNotBound(group: number, device: device?.description)
            }
            throw error
        }
        // A failure below drops `owned`, which closes it once.
        var status = vfio_group_status()
        status.argsz = argsz(vfio_group_status.self)
        try ioctlStruct(owned.borrowed, CVFIO_GROUP_GET_STATUS, &status, "VFIO_GROUP_GET_STATUS on \(path)")
        guard status.flags & UInt32(VFIO_GROUP_FLAGS_VIABLE) != 0 else {
            throw VFIOError.groupNotViable(group: number)
        }
        self.number = number
        self.path = path
        self.owned = owned
    }

    /// Opens the IOMMU group of the PCI device at `address`, found through sysfs.
    /// A group that is not viable is refused naming the members that block it.
    public convenience init(device address: PCIAddress, sysfsRoot: String = "/sys", devVFIO: String = "/dev/vfio") throws(VFIOError) {
        let number = try Self.groupNumber(of: address, sysfsRoot: sysfsRoot)
        do throws(VFIOError) {
            try self.init(number: number, devVFIO: devVFIO, device: address)
        } catch .groupNotViable(let group) {
            let blockers = Self.blockingMembers(group: group, sysfsRoot: sysfsRoot)
            throw blockers.isEmpty ? .groupNotViable(group: group) : .groupBlocked(group: group, blockers: blockers)
        }
        self.sysfsRoot = sysfsRoot
    }

    /// Members of the group that keep it from being viable, as "ADDRESS (driver)" ("?" when
    /// the binding cannot be read), from the inventory itself (`GroupViability.blockReason`,
    /// which fails closed on an unreadable driver link), so the reason VFIO gives for a refused
    /// group and what `vfioctl groups` says agree. Empty when the tree cannot be read.
    public static func blockingMembers(group: Int, sysfsRoot: String = "/sys") -> [String] {
        guard let inventory = try? PCIInventory.scan(root: SysfsRoot(path: sysfsRoot), detail: .summary, names: nil) else { return [] }
        return (inventory.group(group)?.blockers ?? []).map { "\($0.address) (\($0.driver ?? "?"))" }.sorted()
    }

    /// The group's descriptor, borrowed: valid while this object lives; do not close it. This is
    /// what the KVM-VFIO device registers (KVM_DEV_VFIO_FILE_ADD).
    public var rawDescriptor: Int32 { fd.rawValue }

    /// The IOMMU group number of a PCI device: the name of the group its
    /// `bus/pci/devices/ADDR/iommu_group` link points to.
    public static func groupNumber(of address: PCIAddress, sysfsRoot: String = "/sys") throws(VFIOError) -> Int {
        let link = "\(sysfsRoot)/bus/pci/devices/\(address)/iommu_group"
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBufferPointer { bytes in
            // Safety: readlink writes at most `bytes.count - 1` bytes into the buffer it is given.
            guard let start = bytes.baseAddress else { return -1 }
            return readlink(link, start, bytes.count - 1)
        }
        guard count >= 0 else {
            let code = Errno(rawValue: errno)
            if code == .noSuchFileOrDirectory {
                throw .noIOMMUGroup(device: address.description, sysfsPath: link)
            }
            throw .system(operation: "readlink \(link)", errno: code)
        }
        let target = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let name = target.split(separator: "/").last.map(String.init) ?? ""
        guard let number = Int(name), number >= 0 else {
            throw .malformedSysfs(path: link, reason: "it points to \(target), whose last part is not a group number")
        }
        return number
    }

    /// VFIO_GROUP_SET_CONTAINER; the container then sets its IOMMU if this is its first group.
    public func attach(to container: VFIOContainer) throws(VFIOError) {
        if let current = self.container {
            guard current !== container else { return }
            throw .groupInAnotherContainer(group: number)
        }
        var containerFD = container.fd.rawValue
        try ioctlStruct(fd, CVFIO_GROUP_SET_CONTAINER, &containerFD, "VFIO_GROUP_SET_CONTAINER on \(path)")
        do throws(VFIOError) {
            try container.groupAttached()
        } catch {
            _ = try? ioctlValue(fd, CVFIO_GROUP_UNSET_CONTAINER, 0, "VFIO_GROUP_UNSET_CONTAINER on \(path)")
            throw error
        }
        self.container = container
    }

    /// VFIO_GROUP_GET_DEVICE_FD for a member of the group, by its PCI address. `vfToken`: the
    /// VF token its PF (on vfio-pci) was given (`VFIODevice.setVFToken`), required for a VF.
    public func openDevice(_ address: PCIAddress, vfToken: VFToken? = nil) throws(VFIOError) -> VFIODevice {
        guard container != nil else { throw .groupNotAttached(group: number) }
        let name = address.description + (vfToken.map { " vf_token=\($0)" } ?? "")
        let result = try SystemCall.value({
            name.withCString { cName in
                // Safety: the kernel reads a NUL-terminated device name, valid for the call.
                cuapi_ioctl_ptr(fd.rawValue, CVFIO_GROUP_GET_DEVICE_FD, UnsafeMutableRawPointer(mutating: cName))
            }
        }) { VFIOError.system(operation: "VFIO_GROUP_GET_DEVICE_FD(\(name)) on \(path)", errno: $0) }
        return try VFIODevice(address: address, fd: OwnedFileDescriptor(rawValue: result), binding: .group(self), sysfsRoot: sysfsRoot)
    }
}

/// Opens everything needed to use one PCI device through VFIO: a new container, the device's
/// group (which must be viable), attached to the container, and the device itself.
public func openVFIODevice(_ address: PCIAddress, sysfsRoot: String = "/sys", devVFIO: String = "/dev/vfio", vfToken: VFToken? = nil) throws(VFIOError) -> VFIODevice {
    let group = try VFIOGroup(device: address, sysfsRoot: sysfsRoot, devVFIO: devVFIO)
    let container = try VFIOContainer(path: "\(devVFIO)/vfio")
    try group.attach(to: container)
    return try group.openDevice(address, vfToken: vfToken)
}
