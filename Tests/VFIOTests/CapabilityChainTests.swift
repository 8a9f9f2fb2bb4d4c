import CLinuxUAPI
import Testing
import VFIO

/// Lays out an info buffer as the kernel does (vfio_info_cap_add, vfio_info_cap_shift): the info
/// struct, then each capability at the next 8-byte boundary, linked from the one before through
/// header.next (an offset from the start of the buffer); cap_offset and argsz are filled in.
/// Every part is a real uapi struct whose bytes are appended, so the layout is the C compiler's.
struct InfoChain<Info> {
    private var info: Info
    private let argsz: WritableKeyPath<Info, UInt32>
    private let capOffset: WritableKeyPath<Info, UInt32>
    /// Everything after the info struct.
    private var tail: [UInt8] = []
    /// Offsets of the capabilities added, in the order added.
    private(set) var capabilities: [Int] = []
    /// The first capability (the info struct's cap_offset); 0 for none.
    var first = 0

    init(_ info: Info, argsz: WritableKeyPath<Info, UInt32>, capOffset: WritableKeyPath<Info, UInt32>) {
        self.info = info
        self.argsz = argsz
        self.capOffset = capOffset
    }

    var bytes: [UInt8] {
        var head = info
        head[keyPath: argsz] = UInt32(MemoryLayout<Info>.size + tail.count)
        head[keyPath: capOffset] = UInt32(first)
        return Self.bytes(of: head) + tail
    }

    var buffer: InfoBuffer { InfoBuffer(bytes: bytes) }

    static func bytes<T>(of value: T) -> [UInt8] {
        withUnsafeBytes(of: value) { Array($0) }
    }

    static func header(_ id: Int32, version: UInt16 = 1) -> vfio_info_cap_header {
        var header = vfio_info_cap_header()
        header.id = UInt16(id)
        header.version = version
        return header
    }

    /// Appends `capability` (its header already has its id) and `elements` after it, links it
    /// from the last capability added (or makes it the first) unless `linked` is false, and
    /// returns its offset.
    @discardableResult
    mutating func add<Capability, Element>(_ capability: Capability, elements: [Element], linked: Bool = true) -> Int {
        let offset = MemoryLayout<Info>.size + tail.count
        tail += Self.bytes(of: capability)
        for element in elements { tail += Self.bytes(of: element) }
        // vfio_info_cap_add rounds each capability up to a u64 multiple, so the next one is aligned.
        while tail.count % MemoryLayout<UInt64>.size != 0 { tail.append(0) }
        if linked {
            if let last = capabilities.last { link(last, to: offset) } else { first = offset }
        }
        capabilities.append(offset)
        return offset
    }

    @discardableResult
    mutating func add<Capability>(_ capability: Capability, linked: Bool = true) -> Int {
        add(capability, elements: [UInt8](), linked: linked)
    }

    /// Sets the header.next of the capability at `offset`.
    mutating func link(_ offset: Int, to next: Int) {
        let start = offset - MemoryLayout<Info>.size
        var header = tail.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: start, as: vfio_info_cap_header.self) }
        header.next = UInt32(next)
        tail.replaceSubrange(start..<start + MemoryLayout<vfio_info_cap_header>.size, with: Self.bytes(of: header))
    }

    /// Cuts the buffer to `length` bytes, as if the kernel had filled only that much.
    mutating func truncate(toLength length: Int) {
        tail.removeLast(MemoryLayout<Info>.size + tail.count - length)
    }
}

typealias RegionChain = InfoChain<vfio_region_info>
typealias IOMMUChain = InfoChain<vfio_iommu_type1_info>

extension InfoChain where Info == vfio_region_info {
    /// BAR 0 of a 16 MiB register BAR, as VFIO_DEVICE_GET_REGION_INFO fills it.
    init() {
        var info = vfio_region_info()
        info.flags = UInt32(VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS)
        info.size = 16 << 20
        self.init(info, argsz: \.argsz, capOffset: \.cap_offset)
    }
}

extension InfoChain where Info == vfio_iommu_type1_info {
    init() {
        var info = vfio_iommu_type1_info()
        info.flags = UInt32(VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS)
        info.iova_pgsizes = (4 << 10) | (2 << 20) | (1 << 30)
        self.init(info, argsz: \.argsz, capOffset: \.cap_offset)
    }
}

/// The capabilities a test puts in chains.
enum Capability {
    /// An NVIDIA-like BAR 0: mmappable except the page with the MSI-X table at 0xb90000.
    static let areas = [
        vfio_region_sparse_mmap_area(offset: 0, size: 0xb9_0000),
        vfio_region_sparse_mmap_area(offset: 0xb9_1000, size: 0x46_f000),
    ]
    static let expectedAreas: [[UInt64]] = [[0, 0xb9_0000], [0xb9_1000, 0x46_f000]]

    static func sparse(count: Int) -> vfio_region_info_cap_sparse_mmap {
        var capability = vfio_region_info_cap_sparse_mmap()
        capability.header = RegionChain.header(VFIO_REGION_INFO_CAP_SPARSE_MMAP)
        capability.nr_areas = UInt32(count)
        return capability
    }

    static var type: vfio_region_info_cap_type {
        var capability = vfio_region_info_cap_type()
        capability.header = RegionChain.header(VFIO_REGION_INFO_CAP_TYPE)
        capability.type = UInt32(VFIO_REGION_TYPE_GFX)
        capability.subtype = UInt32(VFIO_REGION_SUBTYPE_GFX_EDID)
        return capability
    }

    /// VFIO_REGION_INFO_CAP_MSIX_MAPPABLE is a bare header.
    static var msixMappable: vfio_info_cap_header { RegionChain.header(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) }

    /// A capability this parser does not know (as from a newer kernel), with a payload.
    struct Unknown {
        var header = RegionChain.header(0x7ead, version: 3)
        var payload: UInt64 = 0xdead_beef_cafe_f00d
    }

    static func iovaRanges(count: Int) -> vfio_iommu_type1_info_cap_iova_range {
        var capability = vfio_iommu_type1_info_cap_iova_range()
        capability.header = IOMMUChain.header(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE)
        capability.nr_iovas = UInt32(count)
        return capability
    }

    /// An Intel host's ranges: below an RMRR, up to the interrupt window 0xfee00000-0xfeefffff,
    /// and above it to the 39-bit address width.
    static let ranges = [
        vfio_iova_range(start: 0, end: 0x3e2d_ffff),
        vfio_iova_range(start: 0x3e30_0000, end: 0xfedf_ffff),
        vfio_iova_range(start: 0xfef0_0000, end: 0x7f_ffff_ffff),
    ]
    static let expectedRanges: [[UInt64]] = [[0, 0x3e2d_ffff], [0x3e30_0000, 0xfedf_ffff], [0xfef0_0000, 0x7f_ffff_ffff]]

    static func dmaAvailable(_ count: UInt32) -> vfio_iommu_type1_info_dma_avail {
        var capability = vfio_iommu_type1_info_dma_avail()
        capability.header = IOMMUChain.header(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL)
        capability.avail = count
        return capability
    }

    /// Known to the kernel, not used by this parser: it must be stepped over.
    static var migration: vfio_iommu_type1_info_cap_migration {
        var capability = vfio_iommu_type1_info_cap_migration()
        capability.header = IOMMUChain.header(VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION)
        capability.flags = 1
        capability.pgsize_bitmap = 4 << 10
        capability.max_dirty_bitmap_size = 256 << 20
        return capability
    }
}

extension RegionCapabilities {
    var areaPairs: [[UInt64]]? { sparseAreas?.map { [$0.offset, $0.size] } }
}

extension IOMMUCapabilities {
    var rangePairs: [[UInt64]]? { iovaRanges?.map { [$0.start, $0.end] } }
}

/// The region info as a caller reads it: the first capability from cap_offset, then the chain.
func parseRegion(_ chain: RegionChain) throws -> RegionCapabilities {
    let buffer = chain.buffer
    let first = try #require(buffer.load(\vfio_region_info.cap_offset, ofStructAt: 0))
    return RegionCapabilities.parse(buffer, firstOffset: Int(first))
}

func parseIOMMU(_ chain: IOMMUChain) throws -> IOMMUCapabilities {
    let buffer = chain.buffer
    let first = try #require(buffer.load(\vfio_iommu_type1_info.cap_offset, ofStructAt: 0))
    return IOMMUCapabilities.parse(buffer, firstOffset: Int(first))
}

@Suite struct RegionCapabilityChainTests {
    @Test func sparseTypeAndMSIXMappableInOneChain() throws {
        var chain = RegionChain()
        chain.add(Capability.sparse(count: 2), elements: Capability.areas)
        chain.add(Capability.type)
        chain.add(Capability.msixMappable)
        let parsed = try parseRegion(chain)
        #expect(parsed.areaPairs == Capability.expectedAreas)
        #expect(parsed.type?.type == UInt32(VFIO_REGION_TYPE_GFX))
        #expect(parsed.type?.subtype == UInt32(VFIO_REGION_SUBTYPE_GFX_EDID))
        #expect(parsed.msixMappable)

        // The walk sees each header once, where the builder put it, right after the info struct.
        let entries = chain.buffer.capabilities(firstOffset: chain.first)
        #expect(entries.map(\.offset) == chain.capabilities)
        #expect(entries.map(\.id) == [VFIO_REGION_INFO_CAP_SPARSE_MMAP, VFIO_REGION_INFO_CAP_TYPE, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE].map { UInt16($0) })
        #expect(chain.first == MemoryLayout<vfio_region_info>.size)
    }

    @Test func withoutCapabilitiesNothingIsSet() throws {
        let parsed = try parseRegion(RegionChain())
        #expect(parsed.sparseAreas == nil && parsed.type == nil && !parsed.msixMappable)
    }

    /// The same three capabilities linked in every order, and laid out in memory in an order
    /// other than the chain's, parse to the same result.
    @Test func orderDoesNotMatter() throws {
        var reference = RegionChain()
        reference.add(Capability.sparse(count: 2), elements: Capability.areas)
        reference.add(Capability.type)
        reference.add(Capability.msixMappable)
        let expected = try parseRegion(reference)

        let permutations = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]
        for order in permutations {
            var chain = RegionChain()
            for which in order {
                switch which {
                case 0: chain.add(Capability.sparse(count: 2), elements: Capability.areas)
                case 1: chain.add(Capability.type)
                default: chain.add(Capability.msixMappable)
                }
            }
            #expect(try parseRegion(chain) == expected, "order \(order)")
        }

        // Laid out sparse, type, MSI-X but chained MSI-X -> type -> sparse: next points backwards.
        var backwards = RegionChain()
        let sparse = backwards.add(Capability.sparse(count: 2), elements: Capability.areas, linked: false)
        let type = backwards.add(Capability.type, linked: false)
        let msix = backwards.add(Capability.msixMappable, linked: false)
        backwards.first = msix
        backwards.link(msix, to: type)
        backwards.link(type, to: sparse)
        #expect(try parseRegion(backwards) == expected)
    }

    @Test func unknownCapabilityIsSteppedOver() throws {
        var chain = RegionChain()
        chain.add(Capability.type)
        let unknown = chain.add(Capability.Unknown())
        chain.add(Capability.sparse(count: 2), elements: Capability.areas)
        let parsed = try parseRegion(chain)
        #expect(parsed.areaPairs == Capability.expectedAreas)
        #expect(parsed.type?.subtype == UInt32(VFIO_REGION_SUBTYPE_GFX_EDID))
        #expect(!parsed.msixMappable)
        // The walk lists it (with its version), the parse ignores it.
        let entries = chain.buffer.capabilities(firstOffset: chain.first)
        #expect(entries.count == 3)
        #expect(entries.first { $0.offset == unknown }?.id == 0x7ead)
        #expect(entries.first { $0.offset == unknown }?.version == 3)
    }

    /// A sparse-mmap capability with no areas: nothing in the region may be mmapped, which is
    /// not the same as having no sparse capability at all (nil: the whole region maps).
    @Test func sparseWithNoAreas() throws {
        var chain = RegionChain()
        chain.add(Capability.sparse(count: 0))
        chain.add(Capability.msixMappable)
        let parsed = try parseRegion(chain)
        #expect(parsed.sparseAreas == [])
        #expect(parsed.msixMappable)
    }

    /// nr_areas says 3 but the buffer ends after the first area: only whole areas are read.
    @Test func truncatedAreaListGivesTheWholeAreas() throws {
        var oneArea = RegionChain()
        oneArea.add(Capability.sparse(count: 3), elements: [Capability.areas[0]])
        #expect(try parseRegion(oneArea).areaPairs == [Capability.expectedAreas[0]])

        // One and a half areas: the half is dropped.
        var oneAndHalf = RegionChain()
        oneAndHalf.add(Capability.sparse(count: 3), elements: Capability.areas)
        oneAndHalf.truncate(toLength: oneAndHalf.bytes.count - MemoryLayout<vfio_region_sparse_mmap_area>.size / 2)
        #expect(try parseRegion(oneAndHalf).areaPairs == [Capability.expectedAreas[0]])

        // The buffer ends right after nr_areas and reserved: a list with no whole area.
        var noRoom = RegionChain()
        noRoom.add(Capability.sparse(count: 3))
        #expect(try parseRegion(noRoom).sparseAreas == [])

        // The buffer ends inside nr_areas: the count cannot be read, so no sparse capability.
        var cut = RegionChain()
        let sparse = cut.add(Capability.sparse(count: 3))
        cut.truncate(toLength: sparse + MemoryLayout<vfio_info_cap_header>.size + 2)
        #expect(cut.buffer.capabilities(firstOffset: cut.first).count == 1)
        #expect(try parseRegion(cut).sparseAreas == nil)
    }

    @Test func loopInTheChainEnds() throws {
        var chain = RegionChain()
        let sparse = chain.add(Capability.sparse(count: 2), elements: Capability.areas)
        chain.add(Capability.type)
        let msix = chain.add(Capability.msixMappable)
        chain.link(msix, to: sparse)
        let entries = chain.buffer.capabilities(firstOffset: chain.first)
        #expect(entries.map(\.offset) == chain.capabilities)
        let parsed = try parseRegion(chain)
        #expect(parsed.areaPairs == Capability.expectedAreas && parsed.type != nil && parsed.msixMappable)

        var selfLoop = RegionChain()
        let only = selfLoop.add(Capability.type)
        selfLoop.link(only, to: only)
        #expect(selfLoop.buffer.capabilities(firstOffset: selfLoop.first).count == 1)
        #expect(try parseRegion(selfLoop).type != nil)
    }

    @Test func nextOutsideTheBufferEnds() throws {
        for past in [0, 64, Int(UInt32.max) - 1024] {
            var chain = RegionChain()
            chain.add(Capability.sparse(count: 2), elements: Capability.areas)
            let type = chain.add(Capability.type)
            chain.link(type, to: chain.bytes.count + past)
            #expect(chain.buffer.capabilities(firstOffset: chain.first).count == 2)
            let parsed = try parseRegion(chain)
            #expect(parsed.areaPairs == Capability.expectedAreas && parsed.type != nil && !parsed.msixMappable)
        }
        // A header that starts inside the buffer but does not fit in it is not read.
        var straddling = RegionChain()
        let type = straddling.add(Capability.type)
        straddling.link(type, to: straddling.bytes.count - MemoryLayout<vfio_info_cap_header>.size / 2)
        #expect(straddling.buffer.capabilities(firstOffset: straddling.first).count == 1)
        // And a first offset outside the buffer reads nothing.
        let outside = RegionCapabilities.parse(straddling.buffer, firstOffset: straddling.bytes.count)
        #expect(outside.sparseAreas == nil && outside.type == nil && !outside.msixMappable)
    }

    @Test func offsetZeroEndsTheChain() throws {
        // Capabilities present, but cap_offset 0: the kernel says there is no chain.
        var none = RegionChain()
        none.add(Capability.sparse(count: 2), elements: Capability.areas)
        none.first = 0
        #expect(none.buffer.capabilities(firstOffset: 0).isEmpty)
        #expect(try parseRegion(none).sparseAreas == nil)

        // next = 0 ends the chain even with another capability after it in memory.
        var ended = RegionChain()
        ended.add(Capability.type)
        ended.add(Capability.msixMappable, linked: false)
        let parsed = try parseRegion(ended)
        #expect(parsed.type != nil)
        #expect(!parsed.msixMappable)
    }
}

@Suite struct IOMMUCapabilityChainTests {
    /// Migration, dma_avail, then IOVA ranges: the order vfio_iommu_type1 builds them in.
    @Test func iovaRangesAroundTheMSIWindowAndDMAAvail() throws {
        var chain = IOMMUChain()
        chain.add(Capability.migration)
        chain.add(Capability.dmaAvailable(65535))
        chain.add(Capability.iovaRanges(count: Capability.ranges.count), elements: Capability.ranges)
        let parsed = try parseIOMMU(chain)
        #expect(parsed.rangePairs == Capability.expectedRanges)
        #expect(parsed.dmaAvailable == 65535)

        // The x86 interrupt window splits the space: no range covers any of it.
        let ranges = try #require(parsed.iovaRanges)
        let window: ClosedRange<UInt64> = 0xfee0_0000...0xfeef_ffff
        #expect(ranges.allSatisfy { $0.end < window.lowerBound || $0.start > window.upperBound })
        #expect(ranges.contains { $0.end == window.lowerBound - 1 } && ranges.contains { $0.start == window.upperBound + 1 })
    }

    @Test func orderDoesNotMatter() throws {
        var forwards = IOMMUChain()
        forwards.add(Capability.iovaRanges(count: Capability.ranges.count), elements: Capability.ranges)
        forwards.add(Capability.dmaAvailable(12))
        var backwards = IOMMUChain()
        backwards.add(Capability.dmaAvailable(12))
        backwards.add(Capability.migration)
        backwards.add(Capability.iovaRanges(count: Capability.ranges.count), elements: Capability.ranges)
        #expect(try parseIOMMU(forwards) == parseIOMMU(backwards))
        #expect(try parseIOMMU(forwards).dmaAvailable == 12)
    }

    @Test func withoutCapabilitiesNothingIsSet() throws {
        let parsed = try parseIOMMU(IOMMUChain())
        #expect(parsed.iovaRanges == nil && parsed.dmaAvailable == nil)
    }

    @Test func truncatedRangeListGivesTheWholeRanges() throws {
        var chain = IOMMUChain()
        chain.add(Capability.iovaRanges(count: 5), elements: Array(Capability.ranges.prefix(2)))
        #expect(try parseIOMMU(chain).rangePairs == Array(Capability.expectedRanges.prefix(2)))

        var empty = IOMMUChain()
        empty.add(Capability.iovaRanges(count: 0))
        #expect(try parseIOMMU(empty).iovaRanges == [])
    }

    /// dma_avail cut off after its header: the count is unknown, not zero.
    @Test func truncatedDMAAvailIsUnknown() throws {
        var chain = IOMMUChain()
        let dma = chain.add(Capability.dmaAvailable(7))
        #expect(try parseIOMMU(chain).dmaAvailable == 7)
        chain.truncate(toLength: dma + MemoryLayout<vfio_info_cap_header>.size)
        #expect(chain.buffer.capabilities(firstOffset: chain.first).count == 1)
        #expect(try parseIOMMU(chain).dmaAvailable == nil)
    }
}

@Suite struct InfoBufferTests {
    @Test func structLoadsAreBoundsChecked() {
        let header = RegionChain.header(VFIO_REGION_INFO_CAP_TYPE, version: 2)
        let bytes = RegionChain.bytes(of: header)
        let buffer = InfoBuffer(bytes: bytes + [0xaa])
        #expect(buffer.loadStruct(vfio_info_cap_header.self, at: 0)?.version == 2)
        #expect(buffer.loadStruct(vfio_info_cap_header.self, at: 1) != nil)
        #expect(buffer.loadStruct(vfio_info_cap_header.self, at: 2) == nil)
        #expect(buffer.loadStruct(vfio_info_cap_header.self, at: -1) == nil)
        #expect(buffer.load(\vfio_info_cap_header.next, ofStructAt: bytes.count) == nil)
        #expect(buffer.load(\vfio_info_cap_header.id, ofStructAt: 0) == UInt16(VFIO_REGION_INFO_CAP_TYPE))
        #expect(buffer.trailingArray(after: vfio_info_cap_header.self, at: Int.max, count: 1, of: UInt8.self).isEmpty)
        #expect(buffer.trailingArray(after: vfio_info_cap_header.self, at: 0, count: 9, of: UInt8.self) == [0xaa])
    }
}
