import CLinuxUAPI
import PCIInventory
import SystemCalls
import SystemPackage
import TextFormat

/// A VFIO container (/dev/vfio/vfio): one IOMMU context that groups are attached to, and through
/// which DMA mappings are made for every device in it. Modelled on rust-vmm's `VFIOContainer`.
///
/// The type1v2 IOMMU backend is chosen when the first group is attached (the kernel refuses
/// VFIO_SET_IOMMU on a container with no group). The descriptor is closed exactly once, in
/// deinit; groups keep their container alive, so it outlives every group attached to it.
public final class VFIOContainer {
    /// Where the container node is.
    public static let defaultPath = "/dev/vfio/vfio"

    let owned: OwnedFileDescriptor
    var fd: FileDescriptor { owned.borrowed }
    /// The node this container was opened from.
    public let path: String
    /// Whether VFIO_SET_IOMMU has been done (after the first group was attached).
    public private(set) var iommuIsSet = false
    /// IOVAs in use; made from the IOMMU's ranges and page sizes on the first DMA mapping.
    var iovaAllocator: IOVAAllocator?
    /// Live DMA mappings by IOVA, each holding what backs it so the memory outlives the mapping.
    var activeMappings: [UInt64: ActiveDMA] = [:]
    /// dma_avail as first read, with the number of this container's mappings then: it changes
    /// only through this container's own mappings, so it is tracked instead of read per map.
    var dmaAvailableBaseline: (available: UInt32, mappings: Int)?

    /// Opens the container and checks the API version and the type1v2 backend.
    public init(path: String = VFIOContainer.defaultPath) throws(VFIOError) {
        // Owned: a failure below drops it, which closes it once.
        let owned = try openCharacterDevice(path)
        let fd = owned.borrowed
        let version = try ioctlValue(fd, CVFIO_GET_API_VERSION, 0, "VFIO_GET_API_VERSION on \(path)")
        guard version == VFIO_API_VERSION else {
            throw VFIOError.unsupportedAPIVersion(found: version, expected: Int32(VFIO_API_VERSION))
        }
        let type1v2 = try ioctlValue(fd, CVFIO_CHECK_EXTENSION, UInt(VFIO_TYPE1v2_IOMMU),
                                     "VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU) on \(path)")
        guard type1v2 > 0 else { throw VFIOError.missingExtension(name: "the type1v2 IOMMU (VFIO_TYPE1v2_IOMMU)") }
        self.owned = owned
        self.path = path
    }

    deinit {
        // Unmap every DMA mapping before the memory behind it may go (closing the container
        // would drop them too, but only after this object's references were released).
        // The descriptor closes after this body, when `owned` goes.
        try? unmapAllDMA()
    }

    /// Called by `VFIOGroup.attach(to:)` after VFIO_GROUP_SET_CONTAINER succeeded.
    func groupAttached() throws(VFIOError) {
        guard !iommuIsSet else { return }
        try ioctlValue(fd, CVFIO_SET_IOMMU, UInt(VFIO_TYPE1v2_IOMMU), "VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU) on \(path)")
        iommuIsSet = true
    }

    /// What the IOMMU behind the container can map.
    public struct IOMMUInfo: Sendable, Equatable {
        /// VFIO_IOMMU_INFO_* flags.
        public let flags: UInt32
        /// Bitmap of the page sizes the IOMMU supports (bit n: 2^n bytes).
        public let iovaPageSizes: UInt64
        /// IOVA ranges the IOMMU can map (VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE); nil when the
        /// kernel does not report them (then the whole 64-bit space is assumed).
        public var iovaRanges: [IOVARange]? = nil
        /// How many more DMA mappings the container may make (VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL).
        public var dmaAvailable: UInt32? = nil
    }

    /// VFIO_IOMMU_GET_INFO with its capability chain. Needs a group attached (the IOMMU is set then).
    public func iommuInfo() throws(VFIOError) -> IOMMUInfo {
        var info = vfio_iommu_type1_info()
        info.argsz = argsz(vfio_iommu_type1_info.self)
        let what = "VFIO_IOMMU_GET_INFO on \(path)"
        try ioctlStruct(fd, CVFIO_IOMMU_GET_INFO, &info, what)
        var result = IOMMUInfo(flags: info.flags, iovaPageSizes: info.iova_pgsizes)
        // The kernel says in argsz how much room the capability chain needs: ask again with it.
        if info.flags & CVFIO_IOMMU_INFO_CAPS != 0, info.argsz > argsz(vfio_iommu_type1_info.self) {
            let buffer = try ioctlBuffer(fd, CVFIO_IOMMU_GET_INFO, template: info, argsz: \.argsz, size: Int(info.argsz), what)
            let capOffset = buffer.load(UInt32.self, at: Int(CVFIO_IOMMU_TYPE1_INFO_CAP_OFFSET_OFFSET)) ?? 0
            let capabilities = IOMMUCapabilities.parse(buffer, firstOffset: Int(capOffset))
            result.iovaRanges = capabilities.iovaRanges
            result.dmaAvailable = capabilities.dmaAvailable
        }
        return result
    }

    /// Groups attached through `openDevice`, by number: each group is opened and attached once
    /// however many of its devices are opened. Weak: a group closes when its last device does.
    private var groups: [Int: WeakGroup] = [:]
    private struct WeakGroup { weak var group: VFIOGroup? }

    /// The container's descriptor, borrowed: valid while this object lives; do not close it.
    public var rawDescriptor: Int32 { fd.rawValue }

    /// Opens a device in this container: its group is opened, checked viable and attached the
    /// first time (later devices of the same group reuse it), then the device is opened.
    public func openDevice(_ address: PCIAddress, sysfsRoot: String = "/sys", devVFIO: String = "/dev/vfio") throws(VFIOError) -> VFIODevice {
        let number = try VFIOGroup.groupNumber(of: address, sysfsRoot: sysfsRoot)
        if let group = groups[number]?.group { return try group.openDevice(address) }
        let group = try VFIOGroup(device: address, sysfsRoot: sysfsRoot, devVFIO: devVFIO)
        try group.attach(to: self)
        groups[number] = WeakGroup(group: group)
        return try group.openDevice(address)
    }

    /// The groups attached through `openDevice` that are still open, by number.
    public var attachedGroups: [VFIOGroup] {
        groups.keys.sorted().compactMap { groups[$0]?.group }
    }

    /// VFIO_IOMMU_MAP_DMA as given; the callers keep the books.
    func ioctlMapDMA(address: UnsafeMutableRawPointer, size: UInt64, iova: UInt64,
                     readable: Bool = true, writable: Bool = true) throws(VFIOError) {
        var map = vfio_iommu_type1_dma_map()
        map.argsz = argsz(vfio_iommu_type1_dma_map.self)
        map.flags = (readable ? UInt32(VFIO_DMA_MAP_FLAG_READ) : 0) | (writable ? UInt32(VFIO_DMA_MAP_FLAG_WRITE) : 0)
        map.vaddr = UInt64(UInt(bitPattern: address))
        map.iova = iova
        map.size = size
        try ioctlStruct(fd, CVFIO_IOMMU_MAP_DMA, &map,
                        "VFIO_IOMMU_MAP_DMA of \(size.hex()) bytes at IOVA \(iova.hex())")
    }

    /// VFIO_IOMMU_UNMAP_DMA as given; returns how many bytes the kernel unmapped.
    @discardableResult
    func ioctlUnmapDMA(iova: UInt64, size: UInt64) throws(VFIOError) -> UInt64 {
        var unmap = vfio_iommu_type1_dma_unmap()
        unmap.argsz = argsz(vfio_iommu_type1_dma_unmap.self)
        unmap.iova = iova
        unmap.size = size
        try ioctlStruct(fd, CVFIO_IOMMU_UNMAP_DMA, &unmap,
                        "VFIO_IOMMU_UNMAP_DMA of \(size.hex()) bytes at IOVA \(iova.hex())")
        return unmap.size
    }
}
