import Testing
import VFIO

/// Sparse areas cut from a mappable area: what passthrough maps once the MSI-X pages are out.
@Suite("Sparse areas with holes")
struct SparseAreaTests {
    typealias Area = SparseArea

    @Test func e1000eBar3LosesItsTableAndPBAPages() {
        // 16 KiB BAR: table page [0, 4K), PBA page [8K, 12K).
        let pieces = Area(offset: 0, size: 0x4000).excluding([0x2000..<0x3000, 0..<0x1000])
        #expect(pieces == [Area(offset: 0x1000, size: 0x1000), Area(offset: 0x3000, size: 0x1000)])
    }

    @Test func holesOutsideOrOverlappingTheEdges() {
        let area = Area(offset: 0x10000, size: 0x10000)
        #expect(area.excluding([]) == [area])
        #expect(area.excluding([0..<0x1000, 0x30000..<0x40000]) == [area])
        #expect(area.excluding([0x8000..<0x11000]) == [Area(offset: 0x11000, size: 0xf000)])
        #expect(area.excluding([0x1f000..<0x30000]) == [Area(offset: 0x10000, size: 0xf000)])
        #expect(area.excluding([0..<0x100000]).isEmpty)
        // Overlapping holes merge.
        #expect(area.excluding([0x12000..<0x14000, 0x13000..<0x15000]) == [Area(offset: 0x10000, size: 0x2000), Area(offset: 0x15000, size: 0xb000)])
    }

    /// Brute force over a small area: a page survives exactly when no hole covers it, the pieces
    /// are in order, disjoint, non-empty and never touch (touching pieces would be one).
    @Test func matchesPageByPage() {
        let page: UInt64 = 0x1000
        let area = Area(offset: 2 * page, size: 8 * page)
        let holes: [[Range<UInt64>]] = [
            [], [0..<page], [3 * page..<4 * page], [3 * page..<4 * page, 6 * page..<9 * page],
            [2 * page..<10 * page], [5 * page..<6 * page, 4 * page..<7 * page], [9 * page..<20 * page],
        ]
        for set in holes {
            let pieces = area.excluding(set)
            for index in 0..<20 {
                let start = UInt64(index) * page
                let inArea = start >= area.offset && start < area.offset + area.size
                let inHole = set.contains { $0.contains(start) }
                let kept = pieces.contains { start >= $0.offset && start < $0.offset + $0.size }
                #expect(kept == (inArea && !inHole), "page \(index) with holes \(set)")
            }
            for (a, b) in zip(pieces, pieces.dropFirst()) { #expect(a.offset + a.size < b.offset) }
            #expect(pieces.allSatisfy { $0.size > 0 && area.contains($0) })
        }
    }

    @Test func kernelAreaRunningPast64BitsIsCutNotTrapped() {
        // A crafted area whose end is past 2^64 (found by the sparse-area fuzzer): the pieces
        // end at the top of the space.
        let area = Area(offset: 0xffff_ffff_ffff_0000, size: 0x20000)
        #expect(area.excluding([0xffff_ffff_ffff_8000..<0xffff_ffff_ffff_9000])
                == [Area(offset: 0xffff_ffff_ffff_0000, size: 0x8000), Area(offset: 0xffff_ffff_ffff_9000, size: 0x6fff)])
    }
}
