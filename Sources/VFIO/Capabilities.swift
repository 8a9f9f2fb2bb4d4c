import CLinuxUAPI

/// One entry of a VFIO capability chain (struct vfio_info_cap_header and what follows it).
struct CapabilityEntry {
    let id: UInt16
    let version: UInt16
    /// Offset of the entry's header in the info buffer.
    let offset: Int
}

/// Reads little-endian integers from an info buffer the kernel filled; every read is bounds
/// checked, so a malformed chain gives nil, never a bad read.
struct InfoBuffer {
    let bytes: [UInt8]

    func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        guard offset >= 0, offset <= bytes.count - MemoryLayout<T>.size else { return nil }
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size {
            value |= T(truncatingIfNeeded: bytes[offset + index]) << (8 * index)
        }
        return value
    }

    /// Walks the chain starting at `firstOffset`; stops at offset 0, at a loop, or at damage.
    func capabilities(firstOffset: Int) -> [CapabilityEntry] {
        var entries: [CapabilityEntry] = []
        var offset = firstOffset
        var seen = Set<Int>()
        while offset != 0, !seen.contains(offset),
              let id = load(UInt16.self, at: offset), let version = load(UInt16.self, at: offset + 2),
              let next = load(UInt32.self, at: offset + 4) {
            seen.insert(offset)
            entries.append(CapabilityEntry(id: id, version: version, offset: offset))
            offset = Int(next)
        }
        return entries
    }
}

/// A part of a region that can be mmapped (VFIO_REGION_INFO_CAP_SPARSE_MMAP), e.g. a BAR
/// less the page that holds its MSI-X table.
public struct SparseArea: Sendable, Equatable {
    /// From the region's start.
    public let offset: UInt64
    public let size: UInt64
}

/// A device-specific region's type (VFIO_REGION_INFO_CAP_TYPE).
public struct RegionType: Sendable, Equatable {
    public let type: UInt32
    public let subtype: UInt32
}

/// What the capability chain of a region says.
public struct RegionCapabilities: Sendable, Equatable {
    /// nil when the region has no sparse-mmap capability (the whole region maps, if it maps).
    public var sparseAreas: [SparseArea]?
    public var type: RegionType?
    /// The MSI-X table lies in this region and may be mmapped anyway (VFIO_REGION_INFO_CAP_MSIX_MAPPABLE).
    public var msixMappable = false

    static func parse(_ buffer: InfoBuffer, firstOffset: Int) -> RegionCapabilities {
        var result = RegionCapabilities()
        for entry in buffer.capabilities(firstOffset: firstOffset) {
            switch Int32(entry.id) {
            case VFIO_REGION_INFO_CAP_SPARSE_MMAP:
                // header (8), nr_areas (4), reserved (4), then { offset, size } pairs.
                guard let count = buffer.load(UInt32.self, at: entry.offset + 8) else { continue }
                var areas: [SparseArea] = []
                for index in 0..<Int(min(count, 4096)) {
                    let at = entry.offset + 16 + index * 16
                    guard let offset = buffer.load(UInt64.self, at: at), let size = buffer.load(UInt64.self, at: at + 8) else { break }
                    areas.append(SparseArea(offset: offset, size: size))
                }
                result.sparseAreas = areas
            case VFIO_REGION_INFO_CAP_TYPE:
                if let type = buffer.load(UInt32.self, at: entry.offset + 8), let subtype = buffer.load(UInt32.self, at: entry.offset + 12) {
                    result.type = RegionType(type: type, subtype: subtype)
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
    public let start: UInt64
    public let end: UInt64
}

/// What the capability chain of VFIO_IOMMU_GET_INFO says.
struct IOMMUCapabilities {
    var iovaRanges: [IOVARange]?
    var dmaAvailable: UInt32?

    static func parse(_ buffer: InfoBuffer, firstOffset: Int) -> IOMMUCapabilities {
        var result = IOMMUCapabilities()
        for entry in buffer.capabilities(firstOffset: firstOffset) {
            switch Int32(entry.id) {
            case VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
                // header (8), nr_iovas (4), reserved (4), then { start, end } pairs.
                guard let count = buffer.load(UInt32.self, at: entry.offset + 8) else { continue }
                var ranges: [IOVARange] = []
                for index in 0..<Int(min(count, 4096)) {
                    let at = entry.offset + 16 + index * 16
                    guard let start = buffer.load(UInt64.self, at: at), let end = buffer.load(UInt64.self, at: at + 8) else { break }
                    ranges.append(IOVARange(start: start, end: end))
                }
                result.iovaRanges = ranges
            case VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
                result.dmaAvailable = buffer.load(UInt32.self, at: entry.offset + 8)
            default:
                continue
            }
        }
        return result
    }
}
