import CLinuxUAPI

/// One entry of a VFIO capability chain (struct vfio_info_cap_header and what follows it).
package struct CapabilityEntry: Sendable, Equatable {
    package let id: UInt16
    package let version: UInt16
    /// Offset of the entry's header in the info buffer.
    package let offset: Int
}

/// An info buffer the kernel filled (an info struct, then its capability chain). Every read is
/// bounds checked, so a malformed chain gives nil or less, never a bad read.
package struct InfoBuffer: Sendable {
    package let bytes: [UInt8]

    package init(bytes: [UInt8]) { self.bytes = bytes }

    /// An integer at `offset`, in the host's byte order as the kernel wrote it.
    package func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        guard offset >= 0, offset <= bytes.count - MemoryLayout<T>.size else { return nil }
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size {
            value |= T(truncatingIfNeeded: bytes[offset + index]) << (8 * index)
        }
        return T(littleEndian: value)
    }

    /// A copy of the uapi struct `T` that starts at `offset`, in the host's byte order as the
    /// kernel wrote it; nil unless all of it lies inside the buffer. Fields are then read by
    /// name, so no offset is spelled out here.
    package func loadStruct<T: BitwiseCopyable>(_: T.Type, at offset: Int) -> T? {
        guard offset >= 0, offset <= bytes.count - MemoryLayout<T>.size else { return nil }
        return bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
    }

    /// The integer field `field` of the uapi struct `Root` that starts at `offset`, found by its
    /// offset in `Root`. For structs with a flexible array member, which Swift imports without
    /// the array and does not take as BitwiseCopyable, so `loadStruct` cannot copy them whole.
    package func load<Root, Field: FixedWidthInteger>(_ field: KeyPath<Root, Field>, ofStructAt offset: Int) -> Field? {
        guard offset >= 0, offset <= bytes.count, let fieldOffset = MemoryLayout<Root>.offset(of: field) else { return nil }
        return load(Field.self, at: offset + fieldOffset)
    }

    /// The flexible array member (`areas[]`, `iova_ranges[]`) of the capability struct `Head`
    /// at `offset`: up to `count` elements, only those wholly inside the buffer, so a count
    /// larger than the kernel's buffer holds gives the whole elements that are there.
    package func trailingArray<Head, Element: BitwiseCopyable>(
        after _: Head.Type, at offset: Int, count: UInt32, of _: Element.Type
    ) -> [Element] {
        // Swift does not import the flexible member; it starts at the end of the fixed part,
        // whose fields fill whole u64s in these structs (no tail padding before the array).
        guard offset >= 0, offset <= bytes.count - MemoryLayout<Head>.size else { return [] }
        let start = offset + MemoryLayout<Head>.size
        let stride = MemoryLayout<Element>.stride
        let whole = min(Int(count), (bytes.count - start) / stride)
        return (0..<whole).compactMap { loadStruct(Element.self, at: start + $0 * stride) }
    }

    /// Walks the chain starting at `firstOffset`; stops at offset 0, at a loop, or at damage
    /// (a header not wholly inside the buffer).
    package func capabilities(firstOffset: Int) -> [CapabilityEntry] {
        var entries: [CapabilityEntry] = []
        var offset = firstOffset
        var seen = Set<Int>()
        while offset != 0, !seen.contains(offset), let header = loadStruct(vfio_info_cap_header.self, at: offset) {
            seen.insert(offset)
            entries.append(CapabilityEntry(id: header.id, version: header.version, offset: offset))
            offset = Int(header.next)
        }
        return entries
    }
}

/// A part of a region that can be mmapped (VFIO_REGION_INFO_CAP_SPARSE_MMAP), e.g. a BAR
/// less the page that holds its MSI-X table.
public struct SparseArea: Sendable, Equatable {
    /// From the region's start.
    public let offset: UInt64
    /// Bytes in the area.
    public let size: UInt64

    /// An area of `size` bytes at `offset` in the region.
    public init(offset: UInt64, size: UInt64) {
        self.offset = offset
        self.size = size
    }

    /// Whether `other` lies wholly inside this area.
    public func contains(_ other: SparseArea) -> Bool {
        other.offset >= offset && other.size <= size && other.offset - offset <= size - other.size
    }

    /// The parts of this area outside `holes` (byte ranges from the region's start), in order;
    /// empty parts are dropped. For leaving a BAR's MSI-X table and PBA pages out of a guest
    /// mapping, which turns one area into sparse areas that do not start at offset 0.
    public func excluding(_ holes: [Range<UInt64>]) -> [SparseArea] {
        var pieces: [SparseArea] = []
        var cursor = offset
        // The area comes from the kernel: one running past 2^64 is cut there, not trapped on.
        let (sum, overflow) = offset.addingReportingOverflow(size)
        let end = overflow ? UInt64.max : sum
        for hole in holes.sorted(by: { $0.lowerBound < $1.lowerBound }) where hole.upperBound > cursor && hole.lowerBound < end {
            if hole.lowerBound > cursor { pieces.append(SparseArea(offset: cursor, size: hole.lowerBound - cursor)) }
            cursor = max(cursor, hole.upperBound)
        }
        if cursor < end { pieces.append(SparseArea(offset: cursor, size: end - cursor)) }
        return pieces
    }
}

/// A device-specific region's type (VFIO_REGION_INFO_CAP_TYPE).
public struct RegionType: Sendable, Equatable {
    /// The type (VFIO_REGION_TYPE_*; the top 16 bits a vendor ID for vendor types).
    public let type: UInt32
    /// The subtype within the type.
    public let subtype: UInt32
}

/// What the capability chain of a region says.
public struct RegionCapabilities: Sendable, Equatable {
    /// nil when the region has no sparse-mmap capability (the whole region maps, if it maps).
    public var sparseAreas: [SparseArea]?
    /// The device-specific type; nil when the region has no type capability.
    public var type: RegionType?
    /// The MSI-X table lies in this region and may be mmapped anyway (VFIO_REGION_INFO_CAP_MSIX_MAPPABLE).
    public var msixMappable = false

    /// Reads the chain that starts at `firstOffset` (the info struct's cap_offset). Unknown
    /// capabilities are skipped; a truncated sparse-mmap list gives its whole areas only.
    package static func parse(_ buffer: InfoBuffer, firstOffset: Int) -> RegionCapabilities {
        var result = RegionCapabilities()
        for entry in buffer.capabilities(firstOffset: firstOffset) {
            switch Int32(entry.id) {
            case VFIO_REGION_INFO_CAP_SPARSE_MMAP:
                guard let count = buffer.load(\vfio_region_info_cap_sparse_mmap.nr_areas, ofStructAt: entry.offset) else { continue }
                let areas = buffer.trailingArray(after: vfio_region_info_cap_sparse_mmap.self, at: entry.offset,
                                                 count: count, of: vfio_region_sparse_mmap_area.self)
                result.sparseAreas = areas.map { SparseArea(offset: $0.offset, size: $0.size) }
            case VFIO_REGION_INFO_CAP_TYPE:
                if let capability = buffer.loadStruct(vfio_region_info_cap_type.self, at: entry.offset) {
                    result.type = RegionType(type: capability.type, subtype: capability.subtype)
                }
            case VFIO_REGION_INFO_CAP_MSIX_MAPPABLE:
                result.msixMappable = true
            default:
                continue
            }
        }
        return result
    }
}

/// An IOVA range the IOMMU can map (inclusive end, as the kernel reports it).
public struct IOVARange: Sendable, Equatable {
    /// The first IOVA of the range.
    public let start: UInt64
    /// The last IOVA of the range (inclusive).
    public let end: UInt64
}

/// What the capability chain of VFIO_IOMMU_GET_INFO says.
package struct IOMMUCapabilities: Sendable, Equatable {
    package var iovaRanges: [IOVARange]?
    package var dmaAvailable: UInt32?

    /// Reads the chain that starts at `firstOffset` (vfio_iommu_type1_info's cap_offset), with
    /// the same rules as `RegionCapabilities.parse`.
    package static func parse(_ buffer: InfoBuffer, firstOffset: Int) -> IOMMUCapabilities {
        var result = IOMMUCapabilities()
        for entry in buffer.capabilities(firstOffset: firstOffset) {
            switch Int32(entry.id) {
            case VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
                guard let count = buffer.load(\vfio_iommu_type1_info_cap_iova_range.nr_iovas, ofStructAt: entry.offset) else { continue }
                let ranges = buffer.trailingArray(after: vfio_iommu_type1_info_cap_iova_range.self, at: entry.offset,
                                                  count: count, of: vfio_iova_range.self)
                result.iovaRanges = ranges.map { IOVARange(start: $0.start, end: $0.end) }
            case VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
                result.dmaAvailable = buffer.loadStruct(vfio_iommu_type1_info_dma_avail.self, at: entry.offset)?.avail
            default:
                continue
            }
        }
        return result
    }
}
