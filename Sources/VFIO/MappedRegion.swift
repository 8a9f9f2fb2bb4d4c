#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import HostKernel
import PageAlignment
import SystemPackage

/// A device region (or one sparse area of it) mapped into this process with mmap. Not copyable,
/// so the mapping has exactly one owner: it is unmapped exactly once, by `unmap()` or else when
/// the owner lets it go, together with any guard reservation placed around it.
/// Loads and stores are single volatile accesses of the given width (see CLinuxUAPI's
/// cuapi_mmio_*), checked against the mapping's bounds and natural alignment, and refused while
/// the device's memory decoding is off (the kernel answers such an access with SIGBUS).
public struct MappedRegion: ~Copyable {
    /// Start of the mapping; page aligned.
    public let base: UnsafeMutableRawPointer
    /// Bytes mapped.
    public let size: Int
    /// The VFIO region mapped (`PCIRegion.bar(n)` for a BAR).
    public let regionIndex: UInt32
    /// Whether stores are allowed (the mapping is PROT_WRITE).
    public let isWritable: Bool
    /// Where the mapping starts in the region (non-zero for a sparse area).
    public let regionOffset: UInt64
    /// The bus address of the mapping's first byte, from the BAR's sysfs `resource`; nil when
    /// it is not known (the region is no BAR, or sysfs did not say).
    public let physicalStart: UInt64?
    /// Why `physicalStart` is nil, where reading the BAR's resource failed.
    let physicalStartUnknownBecause: VFIOError?
    /// Owns the mapping and its guards; unmaps them exactly once.
    let lease: MappingLease
    /// The device's memory-decoding state, shared with the device that made the mapping.
    let decode: MemoryDecodeState?
    /// The huge-page advice the mapping carries (what madvise took before the first touch): with
    /// the host's THP facts it decides whether the kernel tries huge faults (HugeFaultHost).
    public let hugePageAdvice: MappingHugePageAdvice

    init(base: UnsafeMutableRawPointer, size: Int, regionIndex: UInt32, writable: Bool, regionOffset: UInt64 = 0,
         physicalStart: UInt64? = nil, physicalStartUnknownBecause: VFIOError? = nil, guards: [RawRange] = [], decode: MemoryDecodeState? = nil,
         hugePageAdvice: MappingHugePageAdvice = .none) {
        self.base = base
        self.size = size
        self.regionIndex = regionIndex
        self.isWritable = writable
        self.regionOffset = regionOffset
        self.physicalStart = physicalStart
        self.physicalStartUnknownBecause = physicalStartUnknownBecause
        self.lease = MappingLease(mapping: RawRange(start: base, length: size), guards: guards)
        self.decode = decode
        self.hugePageAdvice = hugePageAdvice
    }

    /// Unmaps now and reports a failure, which an implicit unmap (when the owner lets the
    /// mapping go) cannot. Refused (`.inUse`) while the region is DMA-mapped for peer-to-peer
    /// (`VFIOContainer.mapDMA(_:)`): devices may still reach it through the IOMMU. The mapping
    /// then stays until the container unmaps that DMA, and goes with the last holder.
    public consuming func unmap() throws(VFIOError) {
        guard lease.dmaMappings == 0 else {
            throw .inUse("region \(regionIndex) is DMA-mapped for peer-to-peer \(lease.dmaMappings) time(s): unmap the DMA (VFIOContainer.unmapDMA) first; the mapping stays until then")
        }
        let status = lease.release()
        guard status == 0 else {
            throw .system(operation: "munmap of region \(regionIndex)", errno: Errno(rawValue: status))
        }
    }

    /// The mapping's address as an integer (for placement reports and the fault planner).
    public var virtualStart: UInt64 { UInt64(UInt(bitPattern: base)) }

    /// The bus (host physical) address behind `offset` bytes into the mapping, from the BAR's
    /// sysfs `resource` (never from vm_pgoff, which for VFIO encodes the region index).
    public func physicalAddress(atOffset offset: Int) throws(VFIOError) -> UInt64 {
        guard offset >= 0, offset < size else { throw .outOfRange(offset: UInt64(clamping: offset), width: 1, size: UInt64(size)) }
        guard let physicalStart else { throw .physicalAddressUnknown(region: regionIndex, cause: physicalStartUnknownBecause) }
        return physicalStart + UInt64(offset)
    }

    /// The bus address behind a pointer into the mapping.
    public func physicalAddress(of pointer: UnsafeRawPointer) throws(VFIOError) -> UInt64 {
        let distance = UnsafeRawPointer(base).distance(to: pointer)
        return try physicalAddress(atOffset: distance)
    }

    /// Reads one byte of every page in `pages` (indices from the mapping's start), in that
    /// order, with volatile loads: each first access of a page is one page fault. Returns the
    /// bytes summed, so the loads cannot be dropped.
    public func touchPages<Pages: Sequence<UInt64>>(_ pages: Pages) throws(VFIOError) -> UInt64 {
        try checkDecoding()
        let pageCount = UInt64(size) / BasePage.size
        var sum: UInt64 = 0
        for page in pages {
            // Checked page by page: the order is computed as it goes (no list of 64 M pages).
            guard page < pageCount else { throw .outOfRange(offset: page &* BasePage.size, width: 1, size: UInt64(size)) }
            // Safety: the page index was checked against the live mapping; reads are 1 byte.
            sum &+= UInt64(cuapi_mmio_read8(base + Int(page << BasePage.shift)))
        }
        return sum
    }

    private func checkDecoding() throws(VFIOError) {
        if let decode, !decode.memoryEnabled { throw .memoryDecodingDisabled(region: regionIndex) }
    }

    /// One load of `width` bytes at `offset`.
    public func load(_ width: AccessWidth, at offset: Int) throws(VFIOError) -> UInt64 {
        let pointer = try checked(offset, width)
        // Safety: `checked` proved the access lies inside the live mapping and is aligned.
        switch width {
        case .byte: return UInt64(cuapi_mmio_read8(pointer))
        case .word: return UInt64(cuapi_mmio_read16(pointer))
        case .dword: return UInt64(cuapi_mmio_read32(pointer))
        case .qword: return cuapi_mmio_read64(pointer)
        }
    }

    /// One store of the low `width` bytes of `value` at `offset`.
    public func store(_ value: UInt64, _ width: AccessWidth, at offset: Int) throws(VFIOError) {
        guard isWritable else { throw .regionAccessDenied(index: regionIndex, access: "write (mapped read-only)") }
        guard value & ~width.mask == 0 else { throw .outOfRange(offset: value, width: width.rawValue, size: width.mask) }
        let pointer = try checked(offset, width)
        // Safety: as in load; the mapping is writable.
        switch width {
        case .byte: cuapi_mmio_write8(pointer, UInt8(truncatingIfNeeded: value))
        case .word: cuapi_mmio_write16(pointer, UInt16(truncatingIfNeeded: value))
        case .dword: cuapi_mmio_write32(pointer, UInt32(truncatingIfNeeded: value))
        case .qword: cuapi_mmio_write64(pointer, value)
        }
    }

    /// A 1-byte volatile load at `offset`; throws when the access falls outside the mapping.
    public func load8(at offset: Int) throws(VFIOError) -> UInt8 { UInt8(truncatingIfNeeded: try load(.byte, at: offset)) }
    /// A 2-byte load (aligned).
    public func load16(at offset: Int) throws(VFIOError) -> UInt16 { UInt16(truncatingIfNeeded: try load(.word, at: offset)) }
    /// A 4-byte load (aligned).
    public func load32(at offset: Int) throws(VFIOError) -> UInt32 { UInt32(truncatingIfNeeded: try load(.dword, at: offset)) }
    /// An 8-byte load (aligned).
    public func load64(at offset: Int) throws(VFIOError) -> UInt64 { try load(.qword, at: offset) }
    /// A 1-byte volatile store at `offset`; throws when the access falls outside the mapping or the mapping is read-only.
    public func store8(_ value: UInt8, at offset: Int) throws(VFIOError) { try store(UInt64(value), .byte, at: offset) }
    /// A 2-byte store (aligned).
    public func store16(_ value: UInt16, at offset: Int) throws(VFIOError) { try store(UInt64(value), .word, at: offset) }
    /// A 4-byte store (aligned).
    public func store32(_ value: UInt32, at offset: Int) throws(VFIOError) { try store(UInt64(value), .dword, at: offset) }
    /// An 8-byte store (aligned).
    public func store64(_ value: UInt64, at offset: Int) throws(VFIOError) { try store(value, .qword, at: offset) }

    private func checked(_ offset: Int, _ width: AccessWidth) throws(VFIOError) -> UnsafeMutableRawPointer {
        try checkDecoding()
        guard offset >= 0, offset <= size, width.rawValue <= size - offset else {
            throw .outOfRange(offset: UInt64(clamping: offset), width: width.rawValue, size: UInt64(size))
        }
        guard offset % width.rawValue == 0 else { throw .misaligned(offset: UInt64(offset), width: width.rawValue) }
        return base + offset
    }
}

/// Unmaps a mapping and its guard reservations exactly once: on `release()` or else in deinit.
final class MappingLease {
    private let mapping: RawRange
    private let guards: [RawRange]
    private var isMapped = true
    /// Live DMA mappings of this memory (peer-to-peer); an explicit unmap waits for none.
    var dmaMappings = 0

    init(mapping: RawRange, guards: [RawRange]) {
        self.mapping = mapping
        self.guards = guards
    }

    /// 0, or the errno of the mapping's munmap.
    func release() -> Int32 {
        guard isMapped else { return 0 }
        isMapped = false
        // Safety: these ranges are exactly what mmap returned (or the parts of our own
        // reservation left after MAP_FIXED), and this lease alone unmaps them, once.
        let status = munmap(mapping.start, mapping.length)
        let code = status == 0 ? 0 : errno
        for range in guards { _ = munmap(range.start, range.length) }
        return code
    }

    deinit { _ = release() }
}

/// A range of this process's address space (a reservation or a mapping).
struct RawRange {
    let start: UnsafeMutableRawPointer
    let length: Int
}

/// Whether the device decodes memory accesses (bit 1 of the PCI command register), as last set
/// or read through the library. Shared by a device and its mappings so that a mapping refuses
/// to touch memory the kernel would answer with SIGBUS.
final class MemoryDecodeState {
    var memoryEnabled: Bool
    init(memoryEnabled: Bool) { self.memoryEnabled = memoryEnabled }
}
