#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BARPlacement
import CLinuxUAPI
import HostKernel
import PCIInventory
import SystemPackage
import TextFormat

/// How `VFIODevice.mapPlaced` places a mapping.
public struct PlacementOptions: Sendable {
    /// Bytes added to vfioctl's placement (page multiple): for measuring what a worse placement
    /// costs. 0 for real use.
    public var skew: UInt64 = 0
    /// Keep PROT_NONE reservations over the rest of every 1 GiB slot the mapping touches, for as
    /// long as it is mapped, so no other mapping's page tables share those slots and the fault
    /// planner's prediction (which assumes empty tables) holds exactly. Costs address space only.
    public var guardPageTableSlots = false
    /// Map with PROT_WRITE (stores allowed).
    public var writable = true
    /// What to tell the kernel about huge pages before the first touch. MADV_HUGEPAGE by default:
    /// under THP mode `madvise` the kernel (6.12 to 7.1) tries huge faults only for mappings
    /// that carry it, and it costs nothing elsewhere. `.none` maps as QEMU does.
    public var hugePageAdvice: MappingHugePageAdvice = .hugePage
    /// Options for `mapPlaced`; the defaults place for huge pages with MADV_HUGEPAGE.
    public init(skew: UInt64 = 0, guardPageTableSlots: Bool = false, writable: Bool = true,
                hugePageAdvice: MappingHugePageAdvice = .hugePage) {
        self.skew = skew
        self.guardPageTableSlots = guardPageTableSlots
        self.writable = writable
        self.hugePageAdvice = hugePageAdvice
    }
}

extension VFIODevice {
    /// The BAR as the kernel placed it (sysfs `resource`): a memory BAR, or a clear error.
    public func barResource(_ bar: Int) throws(VFIOError) -> PCIBAR {
        let path = "\(sysfsRoot)/bus/pci/devices/\(address)/resource"
        guard let text = SysfsReader().readString(path) else {
            throw .unreadableSysfs(path: path)
        }
        let parsed = parseResourceFile(text)
        guard let resource = parsed.bars.first(where: { $0.index == bar }) else {
            let present = parsed.bars.map { "\($0.index) (\($0.kind.rawValue))" }.joined(separator: ", ")
            throw .notMemoryBAR(index: bar, reason: "is not implemented by \(address) (its BARs: \(present.isEmpty ? "none" : present))")
        }
        guard resource.kind == .memory else {
            throw .notMemoryBAR(index: bar, reason: "of \(address) is an I/O-port BAR: it cannot be mmapped (use bar read/write, which fall back to pread/pwrite)")
        }
        guard !resource.unassigned, resource.start != 0 else {
            throw .notMemoryBAR(index: bar, reason: "of \(address) has no address assigned by the kernel")
        }
        return resource
    }

    /// The bus address of a BAR region's first byte, or nil for other regions; throws why when
    /// sysfs does not say. Never 0 as a stand-in for "unknown".
    func physicalStart(ofRegion index: UInt32) throws(VFIOError) -> UInt64? {
        let first = PCIRegion.bar(0)
        guard index >= first, index < first + UInt32(PCIRegion.barCount) else { return nil }
        return try barResource(Int(index - first)).start
    }

    /// Maps one mmap-able area of a BAR region (the whole region, or one of its sparse areas) at
    /// an address congruent to its bus address modulo the largest page that can fit in it, so
    /// the kernel's huge_fault handler can use 1 GiB and 2 MiB pages (see BARPlacement).
    ///
    /// Reserves address space with PROT_NONE, places the mapping with MAP_FIXED inside, and
    /// releases the slack (or keeps it as guards, see `PlacementOptions`).
    public func mapPlaced(_ region: RegionInfo, area: SparseArea? = nil, options: PlacementOptions = PlacementOptions()) throws(VFIOError) -> MappedRegion {
        guard region.size > 0 else { throw .emptyRegion(index: region.index) }
        guard region.isMappable else { throw .regionAccessDenied(index: region.index, access: "mmap") }
        let chosen = area ?? region.mappableAreas.first ?? SparseArea(offset: 0, size: region.size)
        // One of the kernel's mmap areas, or a window inside one (vfio-pci maps any page range
        // of a mappable area; the huge-fault rule is the same at any offset).
        guard chosen.size > 0, region.mappableAreas.contains(where: { $0.contains(chosen) }) else {
            let areas = region.mappableAreas.map { "\($0.offset.hex())+\($0.size.hex())" }.joined(separator: ", ")
            throw .regionAccessDenied(index: region.index, access: "mmap of \(chosen.size.hex()) bytes at \(chosen.offset.hex()) (not inside one of its mmap areas: \(areas.isEmpty ? "none" : areas))")
        }
        let knownBase: UInt64?
        do { knownBase = try physicalStart(ofRegion: region.index) } catch { throw .physicalAddressUnknown(region: region.index, cause: error) }
        guard let physicalBase = knownBase else { throw .physicalAddressUnknown(region: region.index) }
        // Both come from the kernel (sysfs resource, region info): checked, not trusted.
        let (physical, physicalOverflow) = physicalBase.addingReportingOverflow(chosen.offset)
        guard !physicalOverflow, physical <= UInt64.max - chosen.size else {
            throw .placement("the area at offset \(chosen.offset.hex()) of the BAR at \(physicalBase.hex()) runs past the 64-bit bus address space")
        }
        let page = PageGeometry.pageSize
        guard options.skew % page == 0 else { throw .placement("skew \(options.skew.hex()) is not a multiple of 4 KiB") }
        guard chosen.size % page == 0, physical % page == 0 else {
            throw .placement("the area at \(physical.hex()) of \(chosen.size.hex()) bytes is not page aligned")
        }
        let gib = PageGeometry.bytes(order: 18)
        let alignment = options.guardPageTableSlots ? gib : Placement.alignment(physicalStart: physical, length: chosen.size)
        // Room to move the start up by less than `alignment`, the skew, and with guards one
        // more 1 GiB slot on each side of the mapping's slots.
        let extra = options.guardPageTableSlots ? 3 * gib : alignment
        let (sized, sizeOverflow) = chosen.size.addingReportingOverflow(options.skew)
        let (total, totalOverflow) = sized.addingReportingOverflow(extra)
        guard !sizeOverflow, !totalOverflow, let reservationLength = Int(exactly: total) else {
            throw .placement("the area of \(chosen.size.hex()) bytes with a skew of \(options.skew.hex()) does not fit the address space")
        }
        let reservation = try reserveAddressSpace(reservationLength)
        let reservationStart = UInt64(UInt(bitPattern: reservation))
        let floor = options.guardPageTableSlots ? (reservationStart + gib - 1) & ~(gib - 1) : reservationStart
        guard let congruent = Placement.congruentAddress(atOrAbove: floor, physicalStart: physical, alignment: alignment) else {
            _ = munmap(reservation, reservationLength)
            throw .placement("no congruent address in the reservation")
        }
        // congruent < floor + alignment and skew + size + alignment fit the reservation above.
        let start = congruent + options.skew
        let protection = PROT_READ | (options.writable && region.isWritable ? PROT_WRITE : 0)
        let length = Int(chosen.size)
        guard let target = UnsafeMutableRawPointer(bitPattern: UInt(start)),
              case let (offset, overflow) = region.offset.addingReportingOverflow(chosen.offset), !overflow,
              let fileOffset = off_t(exactly: offset) else {
            _ = munmap(reservation, reservationLength)
            throw .placement("address \(start.hex()) is not usable")
        }
        // Safety: [start, start + length) lies inside our own reservation (floor + alignment +
        // skew + length <= reservation end), so MAP_FIXED replaces only memory we own.
        let mapped = mmap(target, length, protection, MAP_SHARED | MAP_FIXED, fd.rawValue, fileOffset)
        guard let mapped, mapped != MAP_FAILED, mapped == target else {
            let code = Errno(rawValue: errno)
            _ = munmap(reservation, reservationLength)
            throw .system(operation: "mmap of \(chosen.size.hex()) bytes at offset \(chosen.offset.hex()) of region \(region.index) of \(address)", errno: code)
        }
        let advice = adviseHugePages(target, length: length, options.hugePageAdvice)
        // The reservation's parts before and after the mapping: released, or kept as guards.
        var slack: [RawRange] = []
        let head = Int(start - reservationStart)
        if head > 0 { slack.append(RawRange(start: reservation, length: head)) }
        let tail = reservationLength - head - length
        if tail > 0 { slack.append(RawRange(start: target + length, length: tail)) }
        if !options.guardPageTableSlots {
            // Safety: these are the unused parts of our own PROT_NONE reservation.
            for range in slack { _ = munmap(range.start, range.length) }
            slack = []
        }
        try refreshMemoryDecodeState()
        return MappedRegion(base: target, size: length, regionIndex: region.index, writable: protection & PROT_WRITE != 0,
                            regionOffset: chosen.offset, physicalStart: physical, guards: slack, decode: decode,
                            hugePageAdvice: advice)
    }
}

/// A PROT_NONE, MAP_NORESERVE anonymous reservation: address space only, no memory, no page
/// tables (nothing in it is ever touched).
func reserveAddressSpace(_ length: Int) throws(VFIOError) -> UnsafeMutableRawPointer {
    // Safety: a fresh private mapping the kernel chooses; nothing existing is replaced.
    let reservation = mmap(nil, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    guard let reservation, reservation != MAP_FAILED else {
        throw .system(operation: "reserving \(length.hex()) bytes of address space", errno: Errno(rawValue: errno))
    }
    return reservation
}

/// Gives a fresh BAR mapping its huge-page advice before anything touches it; returns the advice
/// the kernel took. MADV_HUGEPAGE returns 0 on VFIO BAR mappings; it fails (EINVAL) only on a
/// kernel without THP, where no huge fault happens anyway, so a failure leaves the mapping as
/// it is and is reported as `.none`.
func adviseHugePages(_ start: UnsafeMutableRawPointer, length: Int, _ advice: MappingHugePageAdvice) -> MappingHugePageAdvice {
    let flag: Int32
    switch advice {
    case .none: return .none
    case .hugePage: flag = MADV_HUGEPAGE
    case .noHugePage: flag = MADV_NOHUGEPAGE
    }
    // Safety: [start, start + length) is a mapping this process just made and owns.
    return madvise(start, length, flag) == 0 ? advice : .none
}
