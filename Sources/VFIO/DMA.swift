#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import PageAlignment
import PCIInventory
import SystemPackage
import TextFormat

/// Anonymous memory for DMA, backed by huge pages where the system has them.
///
/// Safety contract: while the buffer is DMA-mapped, the device may read or write it at any
/// time, behind the compiler's back. Access it only with the volatile accessors here (each a
/// single load or store the compiler cannot merge, drop or reorder across calls), never through
/// ordinary Swift pointers that assume no one else writes the memory. The container keeps the
/// buffer alive until it has unmapped it from the IOMMU, so the device never reaches freed memory.
public final class DMABuffer {
    /// What backs the buffer: hugetlbfs pages of 1 GiB or 2 MiB, transparent huge pages, or 4 KiB pages.
    public enum Backing: String, Sendable {
        /// hugetlbfs pages (MAP_HUGETLB) of 1 GiB or 2 MiB: reserved, never split.
        case hugeTLB1G = "hugetlb-1g", hugeTLB2M = "hugetlb-2m"
        /// Transparent huge pages requested with madvise(MADV_HUGEPAGE); the kernel may still use 4 KiB.
        case transparentHuge = "thp"
        /// 4 KiB pages only.
        case basePages = "4k"
    }

    /// The buffer's first byte; page aligned. Accessed with volatile loads and stores only while DMA-mapped.
    public let base: UnsafeMutableRawPointer
    /// Bytes in the buffer.
    public let size: Int
    /// What backs it.
    public let backing: Backing

    /// Allocates `size` bytes (a multiple of the base page), trying 1 GiB then 2 MiB hugetlb pages when
    /// the size is a multiple of them and `preferHugePages`, then transparent huge pages.
    public init(size: Int, preferHugePages: Bool = true) throws(VFIOError) {
        let page = Int(clamping: BasePage.size)
        guard size > 0, size % page == 0 else { throw .invalidDMABufferSize(bytes: size, page: page) }
        let protection = PROT_READ | PROT_WRITE
        let flags = MAP_PRIVATE | MAP_ANONYMOUS
        if preferHugePages {
            // The page size's log2 sits in the bits from MAP_HUGE_SHIFT of each MAP_HUGE_* flag.
            for (pageFlag, backing) in [(CUAPI_MAP_HUGE_1GB, Backing.hugeTLB1G), (CUAPI_MAP_HUGE_2MB, Backing.hugeTLB2M)]
            where size % (1 << Int(pageFlag >> CUAPI_MAP_HUGE_SHIFT)) == 0 {
                // Safety: a fresh private mapping chosen by the kernel.
                let memory = mmap(nil, size, protection, flags | MAP_HUGETLB | pageFlag, -1, 0)
                if let memory, memory != MAP_FAILED {
                    self.base = memory
                    self.size = size
                    self.backing = backing
                    return
                }
            }
        }
        // Safety: as above.
        let memory = mmap(nil, size, protection, flags, -1, 0)
        guard let memory, memory != MAP_FAILED else {
            throw .system(operation: "mmap of a \(size)-byte DMA buffer", errno: Errno(rawValue: errno))
        }
        self.base = memory
        self.size = size
        self.backing = preferHugePages && size >= 2 << 20 && madvise(memory, size, MADV_HUGEPAGE) == 0 ? .transparentHuge : .basePages
    }

    /// Allocates `size` bytes backed exactly as `backing` says, or fails: hugetlb pages must be
    /// reserved (/proc/sys/vm/nr_hugepages, or the 1 GiB pool) and `size` a multiple of them;
    /// `.basePages` is advised MADV_NOHUGEPAGE, so transparent huge pages (THP `always`) stay out.
    public init(size: Int, backing: Backing) throws(VFIOError) {
        let page = Int(clamping: BasePage.size)
        guard size > 0, size % page == 0 else { throw .invalidDMABufferSize(bytes: size, page: page) }
        var flags = MAP_PRIVATE | MAP_ANONYMOUS
        switch backing {
        case .hugeTLB1G, .hugeTLB2M:
            let pageFlag = backing == .hugeTLB1G ? CUAPI_MAP_HUGE_1GB : CUAPI_MAP_HUGE_2MB
            let hugePage = 1 << Int(pageFlag >> CUAPI_MAP_HUGE_SHIFT)
            guard size % hugePage == 0 else { throw .invalidDMABufferSize(bytes: size, page: hugePage) }
            flags |= MAP_HUGETLB | pageFlag
        case .transparentHuge, .basePages:
            break
        }
        // Safety: a fresh private mapping chosen by the kernel.
        let memory = mmap(nil, size, PROT_READ | PROT_WRITE, flags, -1, 0)
        guard let memory, memory != MAP_FAILED else {
            let reserve = flags & MAP_HUGETLB != 0 ? " (are enough \(backing.rawValue) pages reserved? see /proc/meminfo HugePages_Free)" : ""
            throw .system(operation: "mmap of a \(size)-byte \(backing.rawValue) DMA buffer\(reserve)", errno: Errno(rawValue: errno))
        }
        let advice: Int32? = backing == .transparentHuge ? MADV_HUGEPAGE : backing == .basePages ? MADV_NOHUGEPAGE : nil
        if let advice, madvise(memory, size, advice) != 0 {
            let code = errno
            // Safety: the mapping just made, not yet shared with anything.
            _ = munmap(memory, size)
            throw .system(operation: "madvise of a \(size)-byte DMA buffer for \(backing.rawValue) pages", errno: Errno(rawValue: code))
        }
        self.base = memory
        self.size = size
        self.backing = backing
    }

    deinit {
        // Safety: base/size are what mmap returned; the container unmapped every DMA mapping of
        // this buffer first (it holds the buffer until then).
        _ = munmap(base, size)
    }

    /// One volatile byte load at `offset`; throws `.outOfRange` past the buffer's end.
    public func load8(at offset: Int) throws(VFIOError) -> UInt8 {
        try check(offset, 1)
        // Safety: checked inside the buffer; volatile (see the type's contract).
        return cuapi_mmio_read8(base + offset)
    }

    /// One volatile byte store at `offset`; throws `.outOfRange` past the buffer's end.
    public func store8(_ value: UInt8, at offset: Int) throws(VFIOError) {
        try check(offset, 1)
        // Safety: as in load8.
        cuapi_mmio_write8(base + offset, value)
    }

    /// Copies bytes out with volatile byte loads.
    public func bytes(at offset: Int, count: Int) throws(VFIOError) -> [UInt8] {
        try check(offset, count)
        // Safety: checked inside the buffer; volatile (see the type's contract).
        return (0..<count).map { cuapi_mmio_read8(base + offset + $0) }
    }

    /// Copies bytes in with volatile byte stores.
    public func write(_ bytes: [UInt8], at offset: Int) throws(VFIOError) {
        try check(offset, bytes.count)
        // Safety: as in bytes(at:count:).
        for (index, byte) in bytes.enumerated() { cuapi_mmio_write8(base + offset + index, byte) }
    }

    private func check(_ offset: Int, _ count: Int) throws(VFIOError) {
        guard offset >= 0, count >= 0, offset <= size - count else {
            throw .outOfRange(offset: UInt64(clamping: offset), width: count, size: UInt64(size))
        }
    }
}

/// A live DMA mapping: the device sees `size` bytes at `iova`.
public struct DMAMapping: Sendable, Equatable {
    /// The address the device uses.
    public let iova: UInt64
    /// Bytes mapped.
    public let size: UInt64
    /// Device memory (another device's BAR, for peer-to-peer) rather than RAM.
    public let isDeviceMemory: Bool
}

/// What the container holds per mapping: its size and what backs it.
struct ActiveDMA {
    let size: UInt64
    let isDeviceMemory: Bool
    /// A DMABuffer, a MappingLease or the caller's owner: kept alive until the IOMMU mapping is gone.
    let backing: AnyObject?
    /// Set for a BAR mapping, which refuses an explicit unmap while DMA-mapped.
    let lease: MappingLease?
}

/// RLIMIT_MEMLOCK; nil for a value that is unlimited.
public struct MemlockLimit: Sendable, Equatable {
    /// The soft limit in bytes (nil: unlimited).
    public let current: UInt64?
    /// The hard limit in bytes (nil: unlimited).
    public let maximum: UInt64?
    /// The process holds CAP_IPC_LOCK: vfio_iommu_type1 then pins without checking the limit
    /// (root normally has it; a service may not).
    public var exempt: Bool = false
    /// Bytes this process has locked already (VmLck: mlock and every VFIO pin of this mm),
    /// which the kernel adds to a new pin before comparing with the limit.
    public var lockedBytes: UInt64? = nil

    /// A limit as given (tests and planners; `read()` reads this process's).
    public init(current: UInt64?, maximum: UInt64?, exempt: Bool = false, lockedBytes: UInt64? = nil) {
        self.current = current
        self.maximum = maximum
        self.exempt = exempt
        self.lockedBytes = lockedBytes
    }

    /// This process's limit (getrlimit), CAP_IPC_LOCK and the bytes it has locked (VmLck).
    public static func read() -> MemlockLimit {
        var current: UInt64 = 0, maximum: UInt64 = 0
        let exempt = cuapi_has_effective_capability(CUAPI_CAP_IPC_LOCK) == 1
        guard cuapi_memlock_limit(&current, &maximum) == 0 else { return MemlockLimit(current: nil, maximum: nil, exempt: exempt) }
        let limit: UInt64? = current == .max ? nil : current
        // VmLck only matters where the limit applies; every mapDMA reads this, so skip the file
        // read for an exempt or unlimited process.
        let locked = exempt || limit == nil ? nil : lockedBytesOfThisProcess()
        return MemlockLimit(current: limit, maximum: maximum == .max ? nil : maximum, exempt: exempt, lockedBytes: locked)
    }

    /// Whether pinning `bytes` more would pass the kernel's check: always with CAP_IPC_LOCK or
    /// no limit, else while what is counted already plus the new pages stays within the limit.
    /// What is counted depends on the backend (`PinAccounting`): type1 counts this process's
    /// locked memory (VmLck, its own pins included); iommufd counts the user's pins, of which
    /// this process knows only its own (`alreadyPinned`).
    public func allows(pinning bytes: UInt64, alreadyPinned: UInt64, accounting: PinAccounting = .type1) -> Bool {
        guard !exempt, let current else { return true }
        let locked = counted(alreadyPinned: alreadyPinned, accounting: accounting)
        return bytes <= current && locked <= current - bytes
    }

    /// The bytes the kernel already counts against the limit, as far as this process can know.
    public func counted(alreadyPinned: UInt64, accounting: PinAccounting) -> UInt64 {
        accounting == .type1 ? max(lockedBytes ?? 0, alreadyPinned) : alreadyPinned
    }

    /// VmLck from /proc/self/status, in bytes.
    static func lockedBytesOfThisProcess() -> UInt64? {
        guard let file = fopen("/proc/self/status", "re") else { return nil }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard text.hasPrefix("VmLck:") else { continue }
            let digits = text.dropFirst("VmLck:".count).filter(\.isNumber)
            return UInt64(digits).map { $0 * 1024 }
        }
        return nil
    }
}

/// Whose locked-memory count a DMA pin is charged to and compared with RLIMIT_MEMLOCK, by backend.
///
/// - type1 (vfio_iommu_type1's vfio_lock_acct): the process's mm->locked_vm, which mlock also
///   counts (VmLck in /proc/PID/status); every RAM mapping of a container pins.
/// - iommufd (drivers/iommu/iommufd/pages.c, 7.3): an IOAS map pins in mode
///   IOPT_PAGES_ACCOUNT_USER, charged to the user's locked_vm (incr_user_locked_vm, the
///   io_uring method: summed over every process of that user, not counting mlock) against the
///   mapping task's RLIMIT_MEMLOCK; IOPT_PAGES_ACCOUNT_NONE with CAP_IPC_LOCK; and
///   IOPT_PAGES_ACCOUNT_MM (type1's rule) only for /dev/vfio/vfio provided by iommufd or after
///   IOMMU_OPTION_RLIMIT_MODE. A dma-buf mapped with IOMMU_IOAS_MAP_FILE (a peer's BAR) is
///   never charged.
public enum PinAccounting: String, Sendable, Equatable {
    /// Charged to the process (mm->locked_vm, VmLck).
    case type1
    /// Charged to the user (user->locked_vm): other processes of the same user share the limit.
    case iommufd
}

/// The kernel's two DMA budgets, judged before anything is mapped. Pure.
public enum DMABudget {
    /// Refuses `mappings` more mappings pinning `ramBytes` of RAM when they pass the container's
    /// dma_avail (`dmaAvailable`, nil when the kernel does not report it, and always nil on
    /// iommufd, which has no entry limit) or, for RAM, the RLIMIT_MEMLOCK (`memlock`) with
    /// `pinnedBytes` pinned by this DMA space already, counted as `accounting` says.
    public static func check(ramBytes: UInt64, mappings: UInt64, dmaAvailable: UInt32?, memlock: MemlockLimit?,
                             pinnedBytes: UInt64, accounting: PinAccounting = .type1) throws(VFIOError) {
        if let dmaAvailable, mappings > UInt64(dmaAvailable) {
            throw .dmaAvailExhausted(requested: mappings, available: dmaAvailable)
        }
        guard ramBytes > 0, let memlock else { return }
        if !memlock.allows(pinning: ramBytes, alreadyPinned: pinnedBytes, accounting: accounting), let current = memlock.current {
            throw .memlockExceeded(requested: ramBytes, locked: memlock.counted(alreadyPinned: pinnedBytes, accounting: accounting),
                                   limit: current)
        }
    }
}

extension VFIOContainer: DMASpace, DMABookkeeping {
    /// Bytes of RAM this container has pinned for DMA (device memory is not pinned).
    public var pinnedBytes: UInt64 { bookedPinnedBytes }

    /// The mappings made through this container and not yet unmapped, in IOVA order.
    public var dmaMappings: [DMAMapping] { bookedMappings }

    /// Always `.type1`.
    public var dmaBackend: VFIOBackend { .type1 }

    /// Checks, before mapping anything, that `mappings` more mappings pinning `ramBytes` of RAM
    /// fit in the container's dma_avail and this process's RLIMIT_MEMLOCK, exactly as the
    /// kernel will judge them: a process with CAP_IPC_LOCK is exempt from the limit, and pages
    /// the process has locked already count against it.
    public func checkDMABudget(ramBytes: UInt64, mappings: UInt64) throws(VFIOError) {
        let available = try dmaAvailable()
        // Device memory (a peer's BAR) is not pinned: RLIMIT_MEMLOCK does not apply.
        try DMABudget.check(ramBytes: ramBytes, mappings: mappings, dmaAvailable: available,
                            memlock: ramBytes > 0 ? MemlockLimit.read() : nil, pinnedBytes: pinnedBytes,
                            accounting: .type1)
    }

    /// The container's dma_avail now: read from the kernel once, then less the mappings this
    /// container made since (nil where the kernel does not report it).
    func dmaAvailable() throws(VFIOError) -> UInt32? {
        if dmaAvailableBaseline == nil {
            guard let available = try iommuInfo().dmaAvailable else { return nil }
            dmaAvailableBaseline = (available, activeMappings.count)
        }
        guard let baseline = dmaAvailableBaseline else { return nil }
        let made = activeMappings.count - baseline.mappings
        if made <= 0 { return baseline.available &+ UInt32(clamping: -made) }
        return baseline.available > UInt32(clamping: made) ? baseline.available - UInt32(clamping: made) : 0
    }

    /// Maps a RAM buffer for DMA at a free IOVA (aligned to the largest IOMMU page that fits,
    /// or `alignment`, and ending at or below `limit`, e.g. a device's DMA mask).
    public func mapDMA(_ buffer: DMABuffer, alignment: UInt64? = nil, limit: UInt64 = .max) throws(VFIOError) -> DMAMapping {
        try bookBuffer(buffer, alignment: alignment, limit: limit)
    }

    /// Maps another device's BAR mapping (a VM_PFNMAP VMA) for peer-to-peer DMA: devices in the
    /// container then reach that BAR at the returned IOVA. Unmap it with `unmapDMA` before
    /// unmapping the BAR.
    public func mapDMA(_ region: borrowing MappedRegion, alignment: UInt64? = nil, limit: UInt64 = .max) throws(VFIOError) -> DMAMapping {
        try checkDMABudget(ramBytes: 0, mappings: 1)
        let base = region.base, size = UInt64(region.size)
        return try bookMapping(size: size, at: nil, alignment: alignment, limit: limit,
                               isDeviceMemory: true, backing: region.lease, lease: region.lease) { (iova) throws(VFIOError) in
            try ioctlMapDMA(address: base, size: size, iova: iova)
        }
    }

    /// type1 maps the BAR's mapping itself (the kernel walks its PFNMAP VMA); `device` is not needed.
    public func mapPeerBAR(_ region: borrowing MappedRegion, of device: VFIODevice, alignment: UInt64?, limit: UInt64) throws(VFIOError) -> DMAMapping {
        try mapDMA(region, alignment: alignment, limit: limit)
    }

    /// Maps `size` bytes of this process's memory at `unsafeAddress` to exactly `iova` (guest RAM
    /// at IOVA = guest-physical address, say), through the container's books like every other
    /// mapping: the IOVA is reserved in its table (refused if taken or outside the IOMMU's
    /// ranges), the dma_avail and RLIMIT_MEMLOCK budget is checked first (`isDeviceMemory`:
    /// another device's BAR, which is not pinned), and `owner` is held until the mapping is gone.
    ///
    /// Safety: the caller guarantees that [unsafeAddress, unsafeAddress + size) is memory of this
    /// process that stays mapped, at this address, until `unmapDMA` of the returned mapping (or
    /// the container's deinit) has returned -- `owner`, if given, must be what keeps it mapped.
    /// The device may read and write it at any time meanwhile, behind the compiler's back, so
    /// Swift code must not hold assumptions about its contents (access it with volatile loads
    /// and stores). Memory unmapped earlier would leave the device writing pages the kernel
    /// still has pinned but the process may reuse for anything: silent corruption.
    @unsafe
    public func mapDMA(unsafeAddress: UnsafeMutableRawPointer, size: UInt64, iova: UInt64, isDeviceMemory: Bool = false,
                       owner: AnyObject?, readable: Bool = true, writable: Bool = true) throws(VFIOError) -> DMAMapping {
        try unsafe bookFixed(unsafeAddress, size: size, iova: iova, isDeviceMemory: isDeviceMemory, owner: owner,
                             readable: readable, writable: writable)
    }

    /// Unmaps one mapping made with `mapDMA(_:)` and gives its IOVA back.
    public func unmapDMA(_ mapping: DMAMapping) throws(VFIOError) { try unbookMapping(mapping) }

    /// Unmaps every mapping (done on close too).
    public func unmapAllDMA() throws(VFIOError) { try unbookAllMappings() }

    func makeIOVAAllocator() throws(VFIOError) -> IOVAAllocator {
        let info = try iommuInfo()
        let ranges = (info.iovaRanges ?? [IOVARange(start: 0, end: .max)]).map { $0.start...$0.end }
        do { return try IOVAAllocator(ranges: ranges, pageSizes: info.iovaPageSizes) } catch { throw .iovaSpace(error) }
    }

    func removeIOMMUMapping(iova: UInt64, size: UInt64) throws(VFIOError) {
        try ioctlUnmapDMA(iova: iova, size: size)
    }

    func mapProcessMemory(_ address: UnsafeMutableRawPointer, size: UInt64, iova: UInt64, readable: Bool, writable: Bool,
                          isDeviceMemory: Bool) throws(VFIOError) {
        try ioctlMapDMA(address: address, size: size, iova: iova, readable: readable, writable: writable)
    }
}
