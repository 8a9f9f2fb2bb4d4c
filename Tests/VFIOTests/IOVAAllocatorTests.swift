import BARPlacement
import VFIO
import Testing

private let MiB: UInt64 = 1 << 20
private let GiB: UInt64 = 1 << 30

@Suite("IOVA allocator")
struct IOVAAllocatorTests {
    // The lab's emulated Intel IOMMU: 4K, 2M, 1G; its IOVA ranges leave out the MSI window.
    let pageSizes: UInt64 = 0x4020_1000
    let labRanges: [ClosedRange<UInt64>] = [0...0xfedf_ffff, 0xfef0_0000...0xffff_ffff_ffff]

    @Test func neverZeroAndNaturallyAligned() throws {
        var allocator = try IOVAAllocator(ranges: labRanges, pageSizes: pageSizes)
        #expect(try allocator.allocate(size: 4096) == 0x1000)
        #expect(try allocator.allocate(size: 2 * MiB) == 2 * MiB)
        #expect(try allocator.allocate(size: 4096) == 0x2000)
        #expect(try allocator.allocate(size: GiB) == GiB)
        #expect(allocator.naturalAlignment(for: 3 * MiB) == 2 * MiB)
        #expect(allocator.naturalAlignment(for: 2 * GiB) == GiB)
    }

    @Test func respectsTheDeviceLimitAndTheRanges() throws {
        var allocator = try IOVAAllocator(ranges: labRanges, pageSizes: pageSizes)
        // edu's 28-bit DMA mask: a 1 GiB-aligned buffer cannot go there, a 2 MiB-aligned one can.
        #expect(throws: IOVAError.exhausted(size: GiB, alignment: GiB, limit: (1 << 28) - 1)) {
            try allocator.allocate(size: GiB, limit: (1 << 28) - 1)
        }
        #expect(try allocator.allocate(size: 2 * GiB, alignment: 2 * MiB) == 2 * MiB)
        // The hole below 0xfef00000 is skipped: 0xfee00000 would overlap it.
        var small = try IOVAAllocator(ranges: [0x1000...0x1fff, 0x10000...0x1ffff], pageSizes: 0x1000)
        #expect(try small.allocate(size: 0x1000) == 0x1000)
        #expect(try small.allocate(size: 0x2000) == 0x10000)
        #expect(throws: IOVAError.self) { try small.allocate(size: 0x10000) }
    }

    @Test func releaseMakesRoomAgainAndBadInputIsRefused() throws {
        var allocator = try IOVAAllocator(ranges: [0...0xffff], pageSizes: 0x1000)
        let a = try allocator.allocate(size: 0x8000, alignment: 0x1000)
        let b = try allocator.allocate(size: 0x7000, alignment: 0x1000)
        #expect(a == 0x1000 && b == 0x9000)
        #expect(throws: IOVAError.self) { try allocator.allocate(size: 0x1000) }
        try allocator.release(a)
        #expect(try allocator.allocate(size: 0x1000) == 0x1000)
        #expect(throws: IOVAError.notAllocated(0x5000)) { try allocator.release(0x5000) }
        #expect(throws: IOVAError.badSize(0x800, page: 0x1000)) { try allocator.allocate(size: 0x800) }
        #expect(throws: IOVAError.badAlignment(0x3000)) { try allocator.allocate(size: 0x1000, alignment: 0x3000) }
        #expect(throws: IOVAError.noPageSizes) { try IOVAAllocator(ranges: [0...1], pageSizes: 0) }
    }

    @Test func allocationsNeverOverlap() throws {
        var allocator = try IOVAAllocator(ranges: labRanges, pageSizes: pageSizes)
        var generator = SplitMix64(seed: 42)
        var live: [UInt64: UInt64] = [:]
        for _ in 0..<300 {
            if !live.isEmpty, generator.next() % 3 == 0, let victim = live.keys.sorted().first {
                try allocator.release(victim)
                live[victim] = nil
                continue
            }
            let size = (generator.next() % 1024 + 1) * 4096 * (generator.next() % 2 == 0 ? 1 : 512)
            let start = try allocator.allocate(size: size)
            #expect(start != 0)
            #expect(start % allocator.naturalAlignment(for: size) == 0)
            for (other, otherSize) in live { #expect(start + size <= other || other + otherSize <= start) }
            #expect(labRanges.contains { $0.contains(start) && $0.contains(start + size - 1) })
            live[start] = size
        }
    }

    /// IOVA = gpa: exact ranges, IOVA 0 included, refused when taken, unaligned or outside the
    /// IOMMU's ranges; `allocate` then works around them.
    @Test func reservesExactRanges() throws {
        var allocator = try IOVAAllocator(ranges: [0...0xfedf_ffff, 0xfef0_0000...0xffff_ffff], pageSizes: 0x4020_1000)
        try allocator.reserve(start: 0, size: 2 << 20)
        #expect(allocator.allocations == [0..<(2 << 20)])
        #expect(throws: IOVAError.overlaps(start: 0x10_0000, size: 0x1000, existing: 0..<(2 << 20))) {
            try allocator.reserve(start: 0x10_0000, size: 0x1000)
        }
        #expect(throws: IOVAError.badSize(0x800, page: 0x1000)) { try allocator.reserve(start: 0x40_0000, size: 0x800) }
        #expect(throws: IOVAError.badSize(0x1000, page: 0x1000)) { try allocator.reserve(start: 0x40_0800, size: 0x1000) }
        // The MSI window between the ranges, and a wrap past the top.
        #expect(throws: IOVAError.outsideRanges(start: 0xfedf_f000, size: 0x2000)) { try allocator.reserve(start: 0xfedf_f000, size: 0x2000) }
        #expect(throws: IOVAError.outsideRanges(start: UInt64.max - 0xfff, size: 0x2000)) { try allocator.reserve(start: UInt64.max - 0xfff, size: 0x2000) }
        #expect(try allocator.allocate(size: 2 << 20) == 2 << 20)
        try allocator.release(0)
        #expect(try allocator.allocate(size: 0x1000) == 0x1000)
    }
}
