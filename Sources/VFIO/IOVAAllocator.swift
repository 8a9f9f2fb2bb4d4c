import PageAlignment
import TextFormat

/// Hands out I/O virtual addresses for DMA mappings from the ranges the IOMMU allows
/// (VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE), aligned to the largest IOMMU page size that fits
/// the mapping so the IOMMU can use its own huge pages. IOVA 0 is never handed out, so 0 is
/// never a valid mapping address. Pure bookkeeping: maps nothing.
public struct IOVAAllocator: Sendable, Equatable {
    /// Usable ranges, inclusive ends, sorted.
    public let ranges: [ClosedRange<UInt64>]
    /// Bitmap of IOMMU page sizes (bit n: 2^n bytes).
    public let pageSizes: UInt64
    /// Allocated [start, end) intervals, sorted by start.
    public private(set) var allocations: [Range<UInt64>] = []

    /// An allocator over the IOMMU's usable `ranges` with the page sizes it supports (a bitmap, as VFIO reports it); throws when the ranges or page sizes are unusable.
    public init(ranges: [ClosedRange<UInt64>], pageSizes: UInt64) throws(IOVAError) {
        guard pageSizes != 0 else { throw .noPageSizes }
        self.pageSizes = pageSizes
        self.ranges = ranges.sorted { $0.lowerBound < $1.lowerBound }
    }

    /// The smallest page the IOMMU maps: every IOVA and size is a multiple of it.
    public var minimumPageSize: UInt64 { pageSizes & (~pageSizes &+ 1) }

    /// The largest IOMMU page size that is no larger than `size`.
    public func naturalAlignment(for size: UInt64) -> UInt64 {
        var best = minimumPageSize
        var bits = pageSizes
        while bits != 0 {
            let page = bits & (~bits &+ 1)
            if page <= size { best = page }
            bits &= bits - 1
        }
        return best
    }

    /// Allocates `size` bytes at the lowest address that is `alignment` aligned (default: the
    /// natural alignment), inside one allowed range, free, and ending at or below `limit`
    /// (a device's DMA mask, say).
    public mutating func allocate(size: UInt64, alignment: UInt64? = nil, limit: UInt64 = .max) throws(IOVAError) -> UInt64 {
        let page = minimumPageSize
        guard size > 0, size % page == 0 else { throw .badSize(size, page: page) }
        let align = max(alignment ?? naturalAlignment(for: size), page)
        guard align & (align - 1) == 0 else { throw .badAlignment(align) }
        for range in ranges {
            // Never IOVA 0: start at the first page at least.
            var candidate = AddressAlignment.roundUp(max(range.lowerBound, page), to: align)
            while let start = candidate {
                let (end, overflow) = start.addingReportingOverflow(size)   // exclusive
                guard !overflow, end - 1 <= range.upperBound, end - 1 <= limit else { break }
                if let clash = allocations.first(where: { $0.overlaps(start..<end) }) {
                    candidate = AddressAlignment.roundUp(clash.upperBound, to: align)
                    continue
                }
                let index = allocations.firstIndex { $0.lowerBound > start } ?? allocations.endIndex
                allocations.insert(start..<end, at: index)
                return start
            }
        }
        throw .exhausted(size: size, alignment: align, limit: limit)
    }

    /// Takes exactly [start, start + size) (an IOVA the caller chose, such as IOVA = guest-physical
    /// address): whole IOMMU pages, inside one allowed range, overlapping no allocation. IOVA 0
    /// is allowed here (guest RAM starts there); `allocate` still never hands it out.
    public mutating func reserve(start: UInt64, size: UInt64) throws(IOVAError) {
        let page = minimumPageSize
        guard size > 0, size % page == 0, start % page == 0 else { throw .badSize(size, page: page) }
        let (end, overflow) = start.addingReportingOverflow(size)
        guard !overflow, ranges.contains(where: { start >= $0.lowerBound && end - 1 <= $0.upperBound }) else {
            throw .outsideRanges(start: start, size: size)
        }
        if let clash = allocations.first(where: { $0.overlaps(start..<end) }) { throw .overlaps(start: start, size: size, existing: clash) }
        let index = allocations.firstIndex { $0.lowerBound > start } ?? allocations.endIndex
        allocations.insert(start..<end, at: index)
    }

    /// Gives back an allocation made at `start`.
    public mutating func release(_ start: UInt64) throws(IOVAError) {
        guard let index = allocations.firstIndex(where: { $0.lowerBound == start }) else { throw .notAllocated(start) }
        allocations.remove(at: index)
    }
}

/// Why the IOVA allocator refused a range or an allocation.
public enum IOVAError: Error, Equatable, CustomStringConvertible {
    case noPageSizes
    case badSize(UInt64, page: UInt64)
    case badAlignment(UInt64)
    case exhausted(size: UInt64, alignment: UInt64, limit: UInt64)
    case notAllocated(UInt64)
    case outsideRanges(start: UInt64, size: UInt64)
    case overlaps(start: UInt64, size: UInt64, existing: Range<UInt64>)

    /// What was refused, with the numbers.
    public var description: String {
        switch self {
        case .noPageSizes: "the IOMMU reports no page sizes"
        case let .badSize(size, page): "DMA size \(size.hex()) is not a non-zero multiple of the IOMMU page (\(page.hex()))"
        case let .badAlignment(alignment): "IOVA alignment \(alignment.hex()) is not a power of two"
        case let .exhausted(size, alignment, limit):
            "no free IOVA range for \(size.hex()) bytes aligned to \(alignment.hex())" + (limit == .max ? "" : " below \(limit.hex())")
        case let .notAllocated(start): "IOVA \(start.hex()) was not allocated"
        case let .outsideRanges(start, size):
            "IOVA \(start.hex()) + \(size.hex()) is not inside one IOVA range the IOMMU allows (VFIO_IOMMU_GET_INFO lists them)"
        case let .overlaps(start, size, existing):
            "IOVA \(start.hex()) + \(size.hex()) overlaps the mapping at \(existing.lowerBound.hex())-\(existing.upperBound.hex())"
        }
    }
}
