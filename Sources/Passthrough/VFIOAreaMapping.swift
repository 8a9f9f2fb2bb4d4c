import HostKernel
import KVM
import PCIInventory
import PageAlignment
import TextFormat
import VFIO

/// One mmap-able area of a BAR, mapped from the VFIO device file: the memory a `.deviceMemory`
/// memslot points into. Owns the mapping (a `MappedRegion`, which is not copyable), so it is
/// unmapped exactly once, in deinit, when the last holder lets go: `BARMemslots` and the VM
/// hold it while its slot exists, which is what keeps a slot from outliving its mmap.
public final class VFIOAreaMapping: MemslotBacking {
    /// The BAR the area belongs to.
    public let bar: Int
    /// Where the area starts in the BAR.
    public let offset: UInt64
    let mapping: MappedRegion

    init(bar: Int, offset: UInt64, mapping: consuming MappedRegion) {
        self.bar = bar
        self.offset = offset
        self.mapping = mapping
    }

    /// The mapping's host address (the memslot's userspace address).
    public var hostAddress: UInt64 { mapping.virtualStart }
    /// The mapping's length in bytes.
    public var size: Int { mapping.size }
    /// The bus address of the area's first byte (nil when sysfs does not say).
    public var physicalStart: UInt64? { mapping.physicalStart }
    /// The huge-page advice the mapping took (MADV_HUGEPAGE from `mapPlaced`).
    public var hugePageAdvice: MappingHugePageAdvice { mapping.hugePageAdvice }

    /// One load through the mapping (offset from the area's start): what the guest's access
    /// through the memslot reaches too.
    public func load(_ width: AccessWidth, at offset: Int) throws(VFIOError) -> UInt64 {
        try mapping.load(width, at: offset)
    }

    /// One store through the mapping (offset from the area's start).
    public func store(_ value: UInt64, _ width: AccessWidth, at offset: Int) throws(VFIOError) {
        try mapping.store(value, width, at: offset)
    }
}

/// A BAR left out of passthrough, and why.
public struct SkippedBar: Sendable, Equatable {
    /// The BAR number.
    public var bar: Int
    /// Why it is not passed through.
    public var reason: String
}

/// Pages of a BAR kept out of the guest's memslots (the MSI-X table and PBA).
public struct TrappedRange: Sendable, Equatable {
    /// The BAR number.
    public var bar: Int
    /// Offsets in the BAR, whole pages.
    public var ranges: [Range<UInt64>]
}

/// A device's memory BARs mapped for passthrough.
public struct DeviceBARMappings {
    /// The BARs mapped, as memslot backings.
    public var bars: [BARMemory]
    /// BARs left out, with the reason.
    public var skipped: [SkippedBar]
    /// Pages left unmapped on purpose: guest accesses there exit to the VMM.
    public var trapped: [TrappedRange] = []
    /// The same mappings with their VFIO type, for host-side register access.
    public var mappings: [VFIOAreaMapping]
}

extension VFIODevice {
    /// Maps every mmap-able area of every BAR, each placed for huge pages (`mapPlaced`: host
    /// address congruent to the bus address), falling back to a plain mmap when the bus address
    /// is not known. BARs that are empty, I/O ports, not mmap-able or smaller than a page (a
    /// memslot is whole pages) are skipped and listed with the reason.
    ///
    /// The pages holding the MSI-X table and PBA are left out (as QEMU traps them): the host
    /// kernel owns the real table, vfio-pci's region reads return all ones there, and a guest
    /// must reach them only through exits the VMM emulates. So a BAR with its MSI-X table
    /// becomes sparse areas, each placed by its own bus address.
    public func mapBarsForPassthrough(pageSize: UInt64 = BasePage.size) throws(PassthroughError) -> DeviceBARMappings {
        var result = DeviceBARMappings(bars: [], skipped: [], trapped: [], mappings: [])
        let msix = try viaVFIO { () throws(VFIOError) in PCIConfigSpace(bytes: try readConfigBytes(count: 256)).msix }
        for bar in 0..<PCIRegion.barCount {
            let index = PCIRegion.bar(bar)
            guard index < info.regionCount else { break }
            let region = try viaVFIO { () throws(VFIOError) in try regionInfo(index) }
            guard region.size > 0 else { continue }  // unimplemented, or the upper half of a 64-bit BAR
            guard region.isMappable else {
                result.skipped.append(SkippedBar(bar: bar, reason: "not mmap-able (an I/O-port BAR, or vfio-pci will not map it); its accesses would all be MMIO exits"))
                continue
            }
            var areas: [(offset: UInt64, memory: MemslotBacking)] = []
            let trapped = msix?.trappedPages(bar: bar, pageSize: pageSize) ?? []
            if !trapped.isEmpty { result.trapped.append(TrappedRange(bar: bar, ranges: trapped)) }
            for area in region.mappableAreas.flatMap({ $0.excluding(trapped) }) {
                guard area.size % pageSize == 0, area.offset % pageSize == 0 else {
                    result.skipped.append(SkippedBar(bar: bar, reason: "area at \(area.offset.hex()) of \(area.size.hex()) bytes is not whole pages, which a memslot needs"))
                    continue
                }
                let mapped = try viaVFIO { () throws(VFIOError) in try mapForPassthrough(region, area: area) }
                let owner = VFIOAreaMapping(bar: bar, offset: area.offset, mapping: mapped)
                result.mappings.append(owner)
                areas.append((area.offset, owner))
            }
            if !areas.isEmpty {
                result.bars.append(BARMemory(bar: bar, regionIndex: index, regionSize: region.size, areas: areas))
            }
        }
        return result
    }

    /// `mapPlaced`, or a plain mmap of a whole region whose bus address sysfs does not give.
    private func mapForPassthrough(_ region: RegionInfo, area: SparseArea) throws(VFIOError) -> MappedRegion {
        do {
            return try mapPlaced(region, area: area)
        } catch .physicalAddressUnknown where area.offset == 0 && area.size == region.size {
            return try map(region)
        }
    }
}
