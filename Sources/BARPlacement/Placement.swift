import PageAlignment
import TextFormat

/// Where to put a mapping of device memory so the kernel can use huge pages for it.
///
/// A huge mapping of order k needs the virtual and the physical address of its block both
/// 2^k-page aligned, so the virtual address must be congruent to the physical one modulo
/// 2^k pages. Aligning the virtual address "to the size" (QEMU, Cloud Hypervisor) gets this
/// only when the physical address is aligned the same way, which a sparse mmap area at a
/// non-zero offset in its BAR often is not. vfioctl places every mappable area at an address
/// congruent to its physical address modulo the largest page that can ever fit in it.
public enum Placement {
    /// The largest supported page size of which an aligned block lies wholly inside the
    /// physical range [physicalStart, physicalStart + length) (`HugePages.requiredCongruence`
    /// over the geometry's page sizes); the base page when no huge page fits.
    public static func alignment(physicalStart: UInt64, length: UInt64, geometry: PageGeometry = .x86_64) -> UInt64 {
        HugePages.requiredCongruence(hostAddress: physicalStart, size: length,
                                     pageSizes: geometry.orders.map(PageGeometry.bytes(order:))) ?? PageGeometry.pageSize
    }

    /// The lowest address at or above `floor` congruent to `physicalStart` modulo `alignment`
    /// (a power of two), or nil if it would overflow.
    public static func congruentAddress(atOrAbove floor: UInt64, physicalStart: UInt64, alignment: UInt64) -> UInt64? {
        AddressAlignment.congruent(atOrAbove: floor, residue: physicalStart, modulus: alignment)
    }

    /// The fewest page-table entries that can map the physical range: its buddy decomposition
    /// into naturally aligned blocks of the supported sizes (greedy, largest first). Any mapping
    /// of order k covers an aligned physical block of 2^k pages, so none can do with fewer; a
    /// placement congruent modulo the largest page reaches it.
    public static func minimumMappings(physicalStart: UInt64, length: UInt64, geometry: PageGeometry = .x86_64) -> [Int: UInt64] {
        var counts: [Int: UInt64] = [:]
        // The range comes from sysfs: one running past 2^64 is cut there.
        let (sum, overflow) = physicalStart.addingReportingOverflow(length)
        decompose(physicalStart, overflow ? UInt64.max : sum, orders: geometry.orders.reversed(), into: &counts)
        return counts
    }

    /// The greedy decomposition in closed form, per order rather than per block (a 2^62-byte
    /// range is 2^32 blocks of 1 GiB): the largest order covers every aligned block between
    /// its first and last boundary inside [low, high); the smaller orders cover the head and
    /// the tail. A remainder under one base page is not mappable and not counted.
    private static func decompose(_ low: UInt64, _ high: UInt64, orders: some Collection<Int>, into counts: inout [Int: UInt64]) {
        guard low < high, let order = orders.first else { return }
        let size = PageGeometry.bytes(order: order)
        let smaller = orders.dropFirst()
        guard let first = AddressAlignment.roundUp(low, to: size), first < high, size <= high - first else {
            decompose(low, high, orders: smaller, into: &counts)
            return
        }
        let blocks = (high - first) / size
        counts[order, default: 0] += blocks
        decompose(low, first, orders: smaller, into: &counts)
        decompose(first + blocks * size, high, orders: smaller, into: &counts)
    }

    /// Whether each huge order can ever be used for this mapping (under the fixed rule, with
    /// every page touched), and if not, why.
    public static func verdicts(for mapping: MappingGeometry, geometry: PageGeometry = .x86_64) -> [HugeOrderVerdict] {
        geometry.hugeOrdersDescending.map { order in
            let size = PageGeometry.bytes(order: order)
            let name = pageSizeName(size)
            guard mapping.length >= size else {
                return HugeOrderVerdict(order: order, possible: false,
                                        reason: "the area (\(byteCount(mapping.length))) is smaller than one \(name) page")
            }
            let misalignment = (mapping.virtualStart &- mapping.physicalStart) & (size - 1)
            if misalignment != 0 {
                return HugeOrderVerdict(order: order, possible: false,
                                        reason: "the virtual address is \(byteCount(misalignment)) off the physical address modulo \(name); no \(name) page can ever be mapped")
            }
            guard HugePages.requiredCongruence(hostAddress: mapping.physicalStart, size: mapping.length, pageSizes: [size]) == size else {
                return HugeOrderVerdict(order: order, possible: false,
                                        reason: "no \(name)-aligned \(name) block lies inside the physical range \(mapping.physicalStart.hex())+\(byteCount(mapping.length))")
            }
            return HugeOrderVerdict(order: order, possible: true, reason: nil)
        }
    }
}

/// Whether pages of one huge order can be used.
public struct HugeOrderVerdict: Sendable, Equatable {
    /// The huge page order judged (9 or 18 on x86-64).
    public let order: Int
    /// Whether a page of this order can ever be mapped at this placement.
    public let possible: Bool
    /// Why not, when not.
    public let reason: String?
}

/// How a virtual address for a mapping is chosen, for comparison in `vfioctl bar plan`.
public enum PlacementStrategy: String, Sendable, CaseIterable, Codable {
    /// vfioctl: congruent to the physical address modulo 1 GiB (so modulo every page size).
    case vfioctl
    /// A plain mmap: page aligned and, in the worst case, nothing more (one page off).
    case pageAligned = "page-aligned"
    /// QEMU (9.2+) and Cloud Hypervisor: aligned to the area's size rounded up to a power of two,
    /// at most 1 GiB, and, in the worst case, nothing more.
    case sizeAligned = "size-aligned"

    /// The virtual start this strategy may give an area; `base` is a 1 GiB-aligned address that
    /// stands for "somewhere in the address space".
    public func virtualStart(physicalStart: UInt64, length: UInt64, base: UInt64 = Self.modelBase) -> UInt64 {
        let gib = PageGeometry.bytes(order: 18)
        switch self {
        case .vfioctl:
            return base + physicalStart % gib
        case .pageAligned:
            // Wrapping: only the residue modulo 1 GiB matters, and 2^64 is a multiple of it.
            return base + (physicalStart &+ PageGeometry.pageSize) % gib
        case .sizeAligned:
            var align = PageGeometry.pageSize
            while align < length && align < gib { align <<= 1 }
            return base + (align < gib ? align : 0)
        }
    }

    /// 1 TiB: a 1 GiB-aligned user address far from anything else.
    public static let modelBase: UInt64 = 1 << 40
}

/// The usual name of a page size ("4 KiB", "2 MiB", "1 GiB"); any other size as `byteCount`
/// writes it.
public func pageSizeName(_ size: UInt64) -> String {
    switch size {
    case 1 << 30: "1 GiB"
    case 2 << 20: "2 MiB"
    case 4096: "4 KiB"
    default: byteCount(size)
    }
}
