#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import HostKernel
import PCIInventory
import SystemCalls
import SystemPackage
import TextFormat

/// The width of one register access.
public enum AccessWidth: Int, Sendable, CaseIterable {
    case byte = 1, word = 2, dword = 4, qword = 8

    /// The width for 1, 2, 4 or 8 bytes; throws `.invalidWidth` otherwise.
    public init(bytes: Int) throws(VFIOError) {
        guard let width = AccessWidth(rawValue: bytes) else { throw .invalidWidth(bytes) }
        self = width
    }

    /// The largest value the width can hold.
    public var mask: UInt64 { self == .qword ? .max : (1 << UInt64(rawValue * 8)) - 1 }
}

/// What VFIO_DEVICE_GET_INFO says about a device.
public struct DeviceInfo: Sendable, Equatable {
    /// VFIO_DEVICE_FLAGS_*.
    public let flags: UInt32
    /// Regions the device has.
    public let regionCount: UInt32
    /// IRQ indices the device has.
    public let irqCount: UInt32
    /// The device is a PCI device (vfio-pci).
    public var isPCI: Bool { flags & UInt32(VFIO_DEVICE_FLAGS_PCI) != 0 }
    /// VFIO_DEVICE_RESET works on it.
    public var supportsReset: Bool { flags & UInt32(VFIO_DEVICE_FLAGS_RESET) != 0 }
}

/// What VFIO_DEVICE_GET_REGION_INFO says about one region (for PCI: BAR0-5, ROM, config, VGA).
public struct RegionInfo: Sendable, Equatable {
    /// The region index (`PCIRegion`).
    public let index: UInt32
    /// VFIO_REGION_INFO_FLAG_*.
    public let flags: UInt32
    /// Bytes in the region (0: the device does not implement it).
    public let size: UInt64
    /// Where the region starts in the device file, for pread/pwrite and mmap.
    public let offset: UInt64
    /// The region can be read with pread.
    public var isReadable: Bool { flags & UInt32(VFIO_REGION_INFO_FLAG_READ) != 0 }
    /// The region can be written with pwrite.
    public var isWritable: Bool { flags & UInt32(VFIO_REGION_INFO_FLAG_WRITE) != 0 }
    /// The region (or its sparse areas) can be mmapped.
    public var isMappable: Bool { flags & UInt32(VFIO_REGION_INFO_FLAG_MMAP) != 0 }
    /// Sparse mmap areas, region type, MSI-X mappability (from the capability chain).
    public var capabilities = RegionCapabilities()

    /// The parts of the region that can be mmapped: the sparse areas if the kernel lists them,
    /// else the whole region if it is mappable, else none. Sparse areas come from the kernel:
    /// an empty one, or one not wholly inside the region, is left out.
    public var mappableAreas: [SparseArea] {
        guard isMappable, size > 0 else { return [] }
        let whole = SparseArea(offset: 0, size: size)
        guard let sparse = capabilities.sparseAreas else { return [whole] }
        return sparse.filter { $0.size > 0 && whole.contains($0) }
    }
}

/// Region indices of a vfio-pci device, from the uapi.
public enum PCIRegion {
    /// BAR `n` (0-5).
    public static func bar(_ n: Int) -> UInt32 { UInt32(VFIO_PCI_BAR0_REGION_INDEX) + UInt32(n) }
    /// The expansion ROM.
    public static let rom = UInt32(VFIO_PCI_ROM_REGION_INDEX)
    /// Config space.
    public static let config = UInt32(VFIO_PCI_CONFIG_REGION_INDEX)
    /// The legacy VGA ranges (VGA devices only).
    public static let vga = UInt32(VFIO_PCI_VGA_REGION_INDEX)
    /// How many BARs a PCI function has (6).
    public static let barCount = Int(VFIO_PCI_ROM_REGION_INDEX - VFIO_PCI_BAR0_REGION_INDEX)
}

/// How a device was opened, and what it holds alive: its group (type1), or the iommufd address
/// space it is bound and attached to.
public enum VFIODeviceBinding {
    /// Through its group, set into a type1 container.
    case group(VFIOGroup)
    /// Through its device file (`path`), bound to an iommufd with id `deviceID` and attached to its IOAS.
    case iommufd(IOMMUFDAddressSpace, deviceID: UInt32, path: String)
}

/// A device opened through its VFIO group or its device file (iommufd). Modelled on rust-vmm's
/// `VFIODevice`: device and region info, register access by pread/pwrite on a region's offset in
/// the device file, and mmap of a region; the same on both backends. The descriptor is closed
/// exactly once, in deinit; the device keeps its group (and so the container) or its iommufd
/// address space alive.
public final class VFIODevice {
    /// The device's PCI address.
    public let address: PCIAddress
    /// How it was opened (held: the group and its container, or the IOAS, live as long as the device).
    public let binding: VFIODeviceBinding
    /// What VFIO_DEVICE_GET_INFO said when it was opened.
    public let info: DeviceInfo
    let owned: OwnedFileDescriptor
    var fd: FileDescriptor { owned.borrowed }
    /// Memory decoding as last read or set through this device; mappings share it.
    let decode = MemoryDecodeState(memoryEnabled: true)
    /// The sysfs root the device was found under; its BARs' resources are read from it.
    public let sysfsRoot: String

    /// Takes ownership of `fd` (which closes if the info query fails).
    init(address: PCIAddress, fd: consuming OwnedFileDescriptor, binding: VFIODeviceBinding, sysfsRoot: String) throws(VFIOError) {
        var raw = vfio_device_info()
        raw.argsz = argsz(vfio_device_info.self)
        try ioctlStruct(fd.borrowed, CVFIO_DEVICE_GET_INFO, &raw, "VFIO_DEVICE_GET_INFO on \(address)")
        self.address = address
        self.owned = fd
        self.binding = binding
        self.sysfsRoot = sysfsRoot
        self.info = DeviceInfo(flags: raw.flags, regionCount: raw.num_regions, irqCount: raw.num_irqs)
    }

    /// Its group, when it was opened through one (type1); nil on iommufd.
    public var group: VFIOGroup? {
        if case .group(let group) = binding { return group }
        return nil
    }

    /// Its IOMMU group number: the group it was opened through, or on iommufd the one sysfs names.
    public func iommuGroupNumber() throws(VFIOError) -> Int {
        if case .group(let group) = binding { return group.number }
        return try VFIOGroup.groupNumber(of: address, sysfsRoot: sysfsRoot)
    }

    /// Which backend it was opened with.
    public var backend: VFIOBackend {
        if case .group = binding { return .type1 }
        return .iommufd
    }

    /// Where its DMA is mapped: the group's container (type1) or the IOAS (iommufd); nil only for
    /// a group not attached to a container, which cannot hand out devices.
    public var dmaSpace: (any DMASpace)? {
        switch binding {
        case .group(let group): return group.container
        case .iommufd(let space, _, _): return space
        }
    }

    /// The file the KVM-VFIO device registers (KVM_DEV_VFIO_FILE_ADD): the group's descriptor, or
    /// on iommufd the device file's own. Borrowed: valid while this object lives; do not close it.
    public var kvmFileDescriptor: Int32 {
        if case .group(let group) = binding { return group.rawDescriptor }
        return fd.rawValue
    }

    /// The device file's name (vfioN) on iommufd; the group's node ("/dev/vfio/N") on type1.
    public var nodePath: String {
        switch binding {
        case .group(let group): return group.path
        case .iommufd(_, _, let path): return path
        }
    }

    /// The device's descriptor, borrowed: valid while this object lives; do not close it.
    public var rawDescriptor: Int32 { fd.rawValue }

    /// VFIO_DEVICE_GET_REGION_INFO for region `index`.
    public func regionInfo(_ index: UInt32) throws(VFIOError) -> RegionInfo {
        guard index < info.regionCount else { throw .noSuchRegion(index: index, count: info.regionCount) }
        var raw = vfio_region_info()
        raw.argsz = argsz(vfio_region_info.self)
        raw.index = index
        let what = "VFIO_DEVICE_GET_REGION_INFO(\(index)) on \(address)"
        try ioctlStruct(fd, CVFIO_DEVICE_GET_REGION_INFO, &raw, what)
        var region = RegionInfo(index: index, flags: raw.flags, size: raw.size, offset: raw.offset)
        // With capabilities the kernel says how big a buffer it needs in argsz: ask again with one.
        if raw.flags & UInt32(VFIO_REGION_INFO_FLAG_CAPS) != 0, raw.argsz > argsz(vfio_region_info.self) {
            let buffer = try ioctlBuffer(fd, CVFIO_DEVICE_GET_REGION_INFO, template: raw, argsz: \.argsz, size: Int(raw.argsz), what)
            let fresh = buffer.load(UInt32.self, at: Int(CVFIO_REGION_INFO_CAP_OFFSET_OFFSET)) ?? 0
            region.capabilities = RegionCapabilities.parse(buffer, firstOffset: Int(fresh))
        }
        return region
    }

    /// Every IRQ index's info (INTx, MSI, MSI-X, ERR, REQ for PCI).
    public func irqInfo(_ index: UInt32) throws(VFIOError) -> IRQInfo {
        var raw = vfio_irq_info()
        raw.argsz = argsz(vfio_irq_info.self)
        raw.index = index
        try ioctlStruct(fd, CVFIO_DEVICE_GET_IRQ_INFO, &raw, "VFIO_DEVICE_GET_IRQ_INFO(\(index)) on \(address)")
        return IRQInfo(index: index, flags: raw.flags, count: raw.count)
    }

    /// Every region the device has, in index order. vfio-pci answers EINVAL for an index the
    /// device lacks (VGA on a non-VGA device), so those are left out; any other error is thrown.
    public func regions() throws(VFIOError) -> [RegionInfo] {
        var found: [RegionInfo] = []
        for index in 0..<info.regionCount {
            do throws(VFIOError) {
                found.append(try regionInfo(index))
            } catch .system(_, .invalidArgument) {
                continue
            }
        }
        return found
    }

    /// Every IRQ index the device has, in index order; an index it lacks (EINVAL: ERR on a
    /// conventional PCI device) is left out, any other error is thrown.
    public func irqs() throws(VFIOError) -> [IRQInfo] {
        var found: [IRQInfo] = []
        for index in 0..<info.irqCount {
            do throws(VFIOError) {
                found.append(try irqInfo(index))
            } catch .system(_, .invalidArgument) {
                continue
            }
        }
        return found
    }

    /// VFIO_DEVICE_RESET; refused up front when the device offers no reset method
    /// (`info.supportsReset` false, e.g. edu), rather than left to fail in the kernel.
    public func reset() throws(VFIOError) {
        guard info.supportsReset else { throw .resetUnsupported(device: address.description) }
        try ioctlValue(fd, CVFIO_DEVICE_RESET, 0, "VFIO_DEVICE_RESET on \(address)")
    }

    /// Reads `width` bytes at `offset` in the region with one pread (little-endian, as PCI is).
    public func read(_ region: RegionInfo, offset: UInt64, width: AccessWidth) throws(VFIOError) -> UInt64 {
        let fileOffset = try checkAccess(region, offset: offset, width: width, access: "read", allowed: region.isReadable)
        var value: UInt64 = 0
        let count = try withErrno("pread of \(width.rawValue) bytes at \(offset.hex()) in region \(region.index) of \(address)") {
            try withUnsafeMutableBytes(of: &value) { bytes in
                // Safety: the buffer is the 8 bytes of `value`; only the first `width` are read into.
                try fd.read(fromAbsoluteOffset: fileOffset,
                            into: UnsafeMutableRawBufferPointer(rebasing: bytes[0..<width.rawValue]))
            }
        }
        guard count == width.rawValue else { throw .shortTransfer(operation: "pread in region \(region.index)", expected: width.rawValue, actual: count) }
        return UInt64(littleEndian: value)
    }

    /// Writes the low `width` bytes of `value` at `offset` in the region with one pwrite.
    public func write(_ value: UInt64, to region: RegionInfo, offset: UInt64, width: AccessWidth) throws(VFIOError) {
        let fileOffset = try checkAccess(region, offset: offset, width: width, access: "write", allowed: region.isWritable)
        guard value & ~width.mask == 0 else { throw .outOfRange(offset: value, width: width.rawValue, size: width.mask) }
        var little = value.littleEndian
        let count = try withErrno("pwrite of \(width.rawValue) bytes at \(offset.hex()) in region \(region.index) of \(address)") {
            try withUnsafeBytes(of: &little) { bytes in
                // Safety: the buffer is the 8 bytes of `little`; only the first `width` are written.
                try fd.write(toAbsoluteOffset: fileOffset,
                             UnsafeRawBufferPointer(rebasing: bytes[0..<width.rawValue]))
            }
        }
        guard count == width.rawValue else { throw .shortTransfer(operation: "pwrite in region \(region.index)", expected: width.rawValue, actual: count) }
    }

    /// Maps the whole region into this process (MAP_SHARED: accesses reach the device), where
    /// the kernel chooses, with the huge-page advice given before the first touch (see
    /// `PlacementOptions.hugePageAdvice`); see `mapPlaced` for a placement that gets huge pages.
    public func map(_ region: RegionInfo, writable: Bool = true, hugePageAdvice: MappingHugePageAdvice = .hugePage) throws(VFIOError) -> MappedRegion {
        guard region.size > 0 else { throw .emptyRegion(index: region.index) }
        guard region.isMappable else { throw .regionAccessDenied(index: region.index, access: "mmap") }
        guard let length = Int(exactly: region.size), let offset = off_t(exactly: region.offset) else {
            throw .outOfRange(offset: region.offset, width: 0, size: region.size)
        }
        let protection = PROT_READ | (writable && region.isWritable ? PROT_WRITE : 0)
        // Safety: a fresh shared mapping chosen by the kernel; nothing else is overwritten.
        let base = mmap(nil, length, protection, MAP_SHARED, fd.rawValue, offset)
        guard let base, base != MAP_FAILED else {
            throw .system(operation: "mmap of region \(region.index) (\(region.size.hex()) bytes) of \(address)",
                          errno: Errno(rawValue: errno))
        }
        let advice = adviseHugePages(base, length: length, hugePageAdvice)
        // An unknown bus address does not stop a plain mapping; the mapping keeps why it is unknown.
        let physical: UInt64?, unknownBecause: VFIOError?
        do { physical = try physicalStart(ofRegion: region.index); unknownBecause = nil } catch { physical = nil; unknownBecause = error }
        return MappedRegion(base: base, size: length, regionIndex: region.index, writable: protection & PROT_WRITE != 0,
                            physicalStart: physical, physicalStartUnknownBecause: unknownBecause, decode: decode, hugePageAdvice: advice)
    }

    /// Checks an access and returns its offset in the device fd.
    private func checkAccess(_ region: RegionInfo, offset: UInt64, width: AccessWidth, access: String, allowed: Bool) throws(VFIOError) -> Int64 {
        guard region.size > 0 else { throw .emptyRegion(index: region.index) }
        guard allowed else { throw .regionAccessDenied(index: region.index, access: access) }
        guard offset <= region.size, UInt64(width.rawValue) <= region.size - offset else {
            throw .outOfRange(offset: offset, width: width.rawValue, size: region.size)
        }
        guard offset % UInt64(width.rawValue) == 0 else { throw .misaligned(offset: offset, width: width.rawValue) }
        // The region's offset comes from the kernel: checked, not trusted.
        let (sum, overflow) = region.offset.addingReportingOverflow(offset)
        guard !overflow, let fileOffset = Int64(exactly: sum) else {
            throw .outOfRange(offset: offset, width: width.rawValue, size: region.size)
        }
        return fileOffset
    }
}
