import PCIInventory
import SystemCalls
import SystemPackage

/// Where DMA mappings are made for a set of devices, whichever backend opened them: a type1
/// `VFIOContainer` or an iommufd `IOMMUFDAddressSpace`. PassthroughVM, the examples and the CLI
/// map through this and never need to know which one they hold. Every mapping goes through the
/// space's books: its IOVA is allocated or reserved there, the pin budget is checked first, and
/// what backs it is held until it is unmapped.
public protocol DMASpace: AnyObject {
    /// Which backend this space belongs to.
    var dmaBackend: VFIOBackend { get }
    /// Bytes of RAM this space has pinned for DMA (device memory is not pinned).
    var pinnedBytes: UInt64 { get }
    /// The mappings made here and not yet unmapped, in IOVA order.
    var dmaMappings: [DMAMapping] { get }
    /// What the IOMMU behind the space can map: IOVA ranges and page sizes (on iommufd the page
    /// sizes are the alignment the IOAS requires), and type1's dma_avail (nil on iommufd, which
    /// has no entry limit).
    func iommuInfo() throws(VFIOError) -> VFIOContainer.IOMMUInfo
    /// Refuses, before anything is mapped, `mappings` more mappings pinning `ramBytes` of RAM
    /// that the kernel would refuse (dma_avail on type1; RLIMIT_MEMLOCK, counted per backend).
    func checkDMABudget(ramBytes: UInt64, mappings: UInt64) throws(VFIOError)
    /// Maps a RAM buffer at a free IOVA (`alignment` or the natural one, ending at or below `limit`).
    func mapDMA(_ buffer: DMABuffer, alignment: UInt64?, limit: UInt64) throws(VFIOError) -> DMAMapping
    /// Maps `device`'s mapped BAR `region` for peer-to-peer DMA at a free IOVA: type1 maps the
    /// BAR's PFNMAP mapping; iommufd maps a dma-buf VFIO exports for the same range. Unmap it
    /// with `unmapDMA` before unmapping the BAR.
    func mapPeerBAR(_ region: borrowing MappedRegion, of device: VFIODevice, alignment: UInt64?, limit: UInt64) throws(VFIOError) -> DMAMapping
    /// Maps this process's memory at exactly `iova`; see `VFIOContainer.mapDMA(unsafeAddress:...)`
    /// for the caller's guarantees, which are the same on every backend.
    @unsafe
    func mapDMA(unsafeAddress: UnsafeMutableRawPointer, size: UInt64, iova: UInt64, isDeviceMemory: Bool,
                owner: AnyObject?, readable: Bool, writable: Bool) throws(VFIOError) -> DMAMapping
    /// Unmaps one mapping made here and gives its IOVA back.
    func unmapDMA(_ mapping: DMAMapping) throws(VFIOError)
    /// Unmaps every mapping (done when the space goes too).
    func unmapAllDMA() throws(VFIOError)
    /// Opens another device into this space (its group into the container, or its device file
    /// bound and attached to the IOAS), so that mappings here reach it too.
    func openDevice(_ address: PCIAddress, sysfsRoot: String, devVFIO: String) throws(VFIOError) -> VFIODevice
}

extension DMASpace {
    /// Maps a RAM buffer at the first free naturally aligned IOVA.
    public func mapDMA(_ buffer: DMABuffer) throws(VFIOError) -> DMAMapping {
        try mapDMA(buffer, alignment: nil, limit: .max)
    }

    /// Maps a RAM buffer at a free IOVA ending at or below `limit` (a device's DMA mask).
    public func mapDMA(_ buffer: DMABuffer, limit: UInt64) throws(VFIOError) -> DMAMapping {
        try mapDMA(buffer, alignment: nil, limit: limit)
    }

    /// Maps `device`'s mapped BAR at the first free IOVA with `alignment` (natural by default).
    public func mapPeerBAR(_ region: borrowing MappedRegion, of device: VFIODevice, alignment: UInt64? = nil) throws(VFIOError) -> DMAMapping {
        try mapPeerBAR(region, of: device, alignment: alignment, limit: .max)
    }
}

/// The books a DMA space keeps, with their one set of rules: IOVAs from one allocator, each
/// mapping recorded with what backs it only once the kernel has made it, a peer BAR's lease
/// counted while it is DMA-mapped, and the IOVA given back only once the kernel has unmapped it.
protocol DMABookkeeping: AnyObject {
    /// Live mappings by IOVA.
    var activeMappings: [UInt64: ActiveDMA] { get set }
    /// IOVAs in use (nil until first needed, or after the ranges changed).
    var iovaAllocator: IOVAAllocator? { get set }
    /// An allocator over the space's IOVA ranges, read from the kernel.
    func makeIOVAAllocator() throws(VFIOError) -> IOVAAllocator
    /// The kernel call that removes one mapping.
    func removeIOMMUMapping(iova: UInt64, size: UInt64) throws(VFIOError)
    /// The kernel call that maps this process's memory at `iova` (books kept by the caller).
    func mapProcessMemory(_ address: UnsafeMutableRawPointer, size: UInt64, iova: UInt64, readable: Bool, writable: Bool,
                          isDeviceMemory: Bool) throws(VFIOError)
    /// The space's own budget check (`DMASpace.checkDMABudget`).
    func checkDMABudget(ramBytes: UInt64, mappings: UInt64) throws(VFIOError)
}

extension DMABookkeeping {
    var bookedPinnedBytes: UInt64 {
        activeMappings.values.filter { !$0.isDeviceMemory }.reduce(0) { $0 + $1.size }
    }

    var bookedMappings: [DMAMapping] {
        activeMappings.map { DMAMapping(iova: $0.key, size: $0.value.size, isDeviceMemory: $0.value.isDeviceMemory) }.sorted { $0.iova < $1.iova }
    }

    /// Takes an IOVA (exactly `fixed`, or allocated with `alignment` below `limit`), calls `map`
    /// with it, and records the mapping; when `map` throws, nothing is recorded or reserved.
    func bookMapping(size: UInt64, at fixed: UInt64?, alignment: UInt64?, limit: UInt64, isDeviceMemory: Bool,
                     backing: AnyObject?, lease: MappingLease?, map: (UInt64) throws(VFIOError) -> Void) throws(VFIOError) -> DMAMapping {
        var allocator: IOVAAllocator
        if let iovaAllocator { allocator = iovaAllocator } else { allocator = try makeIOVAAllocator() }
        let iova: UInt64
        do throws(IOVAError) {
            if let fixed {
                try allocator.reserve(start: fixed, size: size)
                iova = fixed
            } else {
                iova = try allocator.allocate(size: size, alignment: alignment, limit: limit)
            }
        } catch {
            throw .iovaSpace(error)
        }
        try map(iova)
        iovaAllocator = allocator
        activeMappings[iova] = ActiveDMA(size: size, isDeviceMemory: isDeviceMemory, backing: backing, lease: lease)
        lease?.dmaMappings += 1
        return DMAMapping(iova: iova, size: size, isDeviceMemory: isDeviceMemory)
    }

    /// A RAM buffer at a free IOVA, budget checked first; the space holds the buffer while mapped.
    func bookBuffer(_ buffer: DMABuffer, alignment: UInt64?, limit: UInt64) throws(VFIOError) -> DMAMapping {
        try checkDMABudget(ramBytes: UInt64(buffer.size), mappings: 1)
        return try bookMapping(size: UInt64(buffer.size), at: nil, alignment: alignment, limit: limit,
                               isDeviceMemory: false, backing: buffer, lease: nil) { (iova) throws(VFIOError) in
            try mapProcessMemory(buffer.base, size: UInt64(buffer.size), iova: iova, readable: true, writable: true, isDeviceMemory: false)
        }
    }

    /// Process memory at exactly `iova`, budget checked first (see `DMASpace.mapDMA(unsafeAddress:...)`
    /// for what the caller guarantees); `owner` is held while mapped.
    @unsafe
    func bookFixed(_ address: UnsafeMutableRawPointer, size: UInt64, iova: UInt64, isDeviceMemory: Bool, owner: AnyObject?,
                   readable: Bool, writable: Bool) throws(VFIOError) -> DMAMapping {
        try checkDMABudget(ramBytes: isDeviceMemory ? 0 : size, mappings: 1)
        return try bookMapping(size: size, at: iova, alignment: nil, limit: .max,
                               isDeviceMemory: isDeviceMemory, backing: owner, lease: nil) { (iova) throws(VFIOError) in
            try mapProcessMemory(address, size: size, iova: iova, readable: readable, writable: writable, isDeviceMemory: isDeviceMemory)
        }
    }

    func unbookMapping(_ mapping: DMAMapping) throws(VFIOError) {
        guard let active = activeMappings[mapping.iova] else { throw .notMapped(iova: mapping.iova) }
        try removeIOMMUMapping(iova: mapping.iova, size: mapping.size)
        activeMappings[mapping.iova] = nil
        active.lease?.dmaMappings -= 1
        try? iovaAllocator?.release(mapping.iova)
    }

    func unbookAllMappings() throws(VFIOError) {
        var firstError: VFIOError?
        for mapping in bookedMappings {
            do throws(VFIOError) { try unbookMapping(mapping) } catch { firstError = firstError ?? error }
        }
        if let firstError { throw firstError }
    }
}

extension IOMMUFDAddressSpace: DMASpace, DMABookkeeping {
    /// Always `.iommufd`.
    public var dmaBackend: VFIOBackend { .iommufd }

    /// Bytes of RAM this IOAS has pinned (a dma-buf, a peer's BAR, is not pinned).
    public var pinnedBytes: UInt64 { bookedPinnedBytes }

    /// The mappings made in this IOAS and not yet unmapped, in IOVA order.
    public var dmaMappings: [DMAMapping] { bookedMappings }

    /// IOMMU_IOAS_IOVA_RANGES as an `IOMMUInfo`: the ranges, the required alignment as the only
    /// page size, no dma_avail.
    public func iommuInfo() throws(VFIOError) -> VFIOContainer.IOMMUInfo {
        let (ranges, alignment) = try iovaRanges()
        return VFIOContainer.IOMMUInfo(flags: 0, iovaPageSizes: alignment, iovaRanges: ranges, dmaAvailable: nil)
    }

    /// iommufd has no per-space entry limit (type1's dma_avail); only RLIMIT_MEMLOCK applies,
    /// charged to the user (`PinAccounting.iommufd`), of which this IOAS's own pins are known.
    public func checkDMABudget(ramBytes: UInt64, mappings: UInt64) throws(VFIOError) {
        try DMABudget.check(ramBytes: ramBytes, mappings: mappings, dmaAvailable: nil,
                            memlock: ramBytes > 0 ? MemlockLimit.read() : nil, pinnedBytes: pinnedBytes,
                            accounting: .iommufd)
    }

    /// Maps a RAM buffer with IOMMU_IOAS_MAP at a free IOVA (`alignment` or the natural one,
    /// ending at or below `limit`).
    public func mapDMA(_ buffer: DMABuffer, alignment: UInt64?, limit: UInt64) throws(VFIOError) -> DMAMapping {
        try bookBuffer(buffer, alignment: alignment, limit: limit)
    }

    /// Exports the region's range of `device` as a dma-buf (VFIO_DEVICE_FEATURE_DMA_BUF) and maps
    /// it with IOMMU_IOAS_MAP_FILE; the IOAS keeps its own reference to the dma-buf, so the
    /// exported descriptor is closed again here. The BAR's own mapping is not used by the IOMMU,
    /// but stays leased until the DMA is unmapped, as on type1.
    public func mapPeerBAR(_ region: borrowing MappedRegion, of device: VFIODevice, alignment: UInt64?, limit: UInt64) throws(VFIOError) -> DMAMapping {
        let size = UInt64(region.size)
        let buffer = try device.exportDMABuf(region: region.regionIndex, offset: region.regionOffset, length: size)
        return try bookMapping(size: size, at: nil, alignment: alignment, limit: limit,
                               isDeviceMemory: true, backing: region.lease, lease: region.lease) { (iova) throws(VFIOError) in
            try ioctlMapFile(buffer.borrowed, start: 0, size: size, iova: iova)
        }
    }

    /// Maps this process's memory at exactly `iova` with IOMMU_IOAS_MAP; the caller's guarantees
    /// are those of `VFIOContainer.mapDMA(unsafeAddress:...)`. Device memory (a BAR's PFNMAP
    /// mapping) fails here with `.pfnmapNotMappable`: iommufd pins pages, and a PFNMAP VMA has none.
    @unsafe
    public func mapDMA(unsafeAddress: UnsafeMutableRawPointer, size: UInt64, iova: UInt64, isDeviceMemory: Bool = false,
                       owner: AnyObject?, readable: Bool = true, writable: Bool = true) throws(VFIOError) -> DMAMapping {
        try unsafe bookFixed(unsafeAddress, size: size, iova: iova, isDeviceMemory: isDeviceMemory, owner: owner,
                             readable: readable, writable: writable)
    }

    /// Unmaps one mapping made here and gives its IOVA back.
    public func unmapDMA(_ mapping: DMAMapping) throws(VFIOError) { try unbookMapping(mapping) }

    /// Unmaps every mapping (done when the IOAS goes too).
    public func unmapAllDMA() throws(VFIOError) { try unbookAllMappings() }

    /// Opens a device into this IOAS (see `openDevice(_:sysfsRoot:devVFIO:vfToken:)`).
    public func openDevice(_ address: PCIAddress, sysfsRoot: String, devVFIO: String) throws(VFIOError) -> VFIODevice {
        try openDevice(address, sysfsRoot: sysfsRoot, devVFIO: devVFIO, vfToken: nil)
    }

    func makeIOVAAllocator() throws(VFIOError) -> IOVAAllocator {
        let (ranges, alignment) = try iovaRanges()
        // iommufd reports the smallest alignment a mapping needs, not the IOMMU's page sizes;
        // offering 2 MiB and 1 GiB as well lets large mappings sit where huge IOMMU pages fit.
        let pageSizes = alignment | (UInt64(1) << 21) | (UInt64(1) << 30)
        do { return try IOVAAllocator(ranges: ranges.map { $0.start...$0.end }, pageSizes: pageSizes) } catch { throw .iovaSpace(error) }
    }

    func removeIOMMUMapping(iova: UInt64, size: UInt64) throws(VFIOError) {
        try ioctlUnmap(iova: iova, size: size)
    }

    func mapProcessMemory(_ address: UnsafeMutableRawPointer, size: UInt64, iova: UInt64, readable: Bool, writable: Bool,
                          isDeviceMemory: Bool) throws(VFIOError) {
        try ioctlMap(address: address, size: size, iova: iova, readable: readable, writable: writable, isDeviceMemory: isDeviceMemory)
    }
}

/// Opens everything needed to use one PCI device through VFIO with the backend `backend` asks
/// for (`.auto`: iommufd where /dev/iommu and the device's file exist): for type1 a new
/// container and the device's (viable) group; for iommufd a new iommufd with one IOAS, the
/// device file bound and attached. `devRoot` is where /dev/iommu is looked for.
public func openVFIODevice(_ address: PCIAddress, backend: VFIOBackendRequest, sysfsRoot: String = "/sys",
                           devVFIO: String = "/dev/vfio", devRoot: String = "/dev", vfToken: VFToken? = nil) throws(VFIOError) -> VFIODevice {
    let chosen = try backend.resolve(address, sysfsRoot: sysfsRoot, devRoot: devRoot)
    switch chosen {
    case .type1:
        return try openVFIODevice(address, sysfsRoot: sysfsRoot, devVFIO: devVFIO, vfToken: vfToken)
    case .iommufd:
        let space = try IOMMUFDAddressSpace(path: "\(devRoot)/iommu")
        return try space.openDevice(address, sysfsRoot: sysfsRoot, devVFIO: devVFIO, vfToken: vfToken)
    }
}

/// A new, empty DMA space of `backend` (type1: a container at `devVFIO`/vfio; iommufd: an IOAS
/// in a new iommufd at `devRoot`/iommu), for opening several devices into one space.
public func makeDMASpace(_ backend: VFIOBackend, devVFIO: String = "/dev/vfio", devRoot: String = "/dev") throws(VFIOError) -> any DMASpace {
    switch backend {
    case .type1: return try VFIOContainer(path: "\(devVFIO)/vfio")
    case .iommufd: return try IOMMUFDAddressSpace(path: "\(devRoot)/iommu")
    }
}
