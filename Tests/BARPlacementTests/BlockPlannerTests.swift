@testable import BARPlacement
import Foundation
import Testing

/// The block planner against the page-by-page reference (ReferencePlanner.swift, the planner as
/// it was) over geometries, skews, windows, patterns, page-table states and kernel models.
@Suite("Fault planner: blocks equal pages")
struct BlockPlannerTests {
    static let models: [KernelFaultModel] = [
        .linux612, .linux612Unfixed,
        KernelFaultModel(rule: .alignedBlock, retriesPTEFaultUnderMmapLock: false),
        KernelFaultModel(rule: .alignedAddress, retriesPTEFaultUnderMmapLock: false),
    ]
    static let orderSets: [[Int]] = [[0, 9, 18], [0, 9], [0, 18], [0]]
    static let patterns: [AccessPattern] = [.linear, .reverse, .random(seed: 1), .random(seed: 0xdead_beef)]

    /// Page tables present before the first access: none, the slots just before and at the
    /// mapping's start, one in the middle, and the slot after the end.
    static func tableSets(_ mapping: MappingGeometry) -> [[TableSlot]] {
        let middle = mapping.virtualStart + mapping.length / 2
        return [
            [],
            [TableSlot(order: 18, address: mapping.virtualStart), TableSlot(order: 9, address: mapping.virtualStart)],
            [TableSlot(order: 9, address: middle), TableSlot(order: 18, address: mapping.virtualEnd - 1)],
            [TableSlot(order: 18, address: middle), TableSlot(order: 9, address: mapping.virtualEnd), TableSlot(order: 9, address: mapping.virtualStart &- 1)],
        ]
    }

    func check(_ mapping: MappingGeometry, patterns: [AccessPattern] = Self.patterns, tableSets: [[TableSlot]]? = nil,
               orderSets: [[Int]] = Self.orderSets, models: [KernelFaultModel] = Self.models) throws {
        for orders in orderSets {
            let geometry = try PageGeometry(orders: orders)
            for model in models {
                for tables in tableSets ?? Self.tableSets(mapping) {
                    for pattern in patterns {
                        let planner = FaultPlanner(mapping: mapping, geometry: geometry, model: model, tablesPresent: tables)
                        let reference = ReferencePlanner(mapping: mapping, geometry: geometry, model: model, tablesPresent: tables)
                        let expected = try reference.predict(pattern)
                        let blocks = try planner.predict(pattern)
                        #expect(blocks == expected, "0x\(String(mapping.virtualStart, radix: 16))+0x\(String(mapping.length, radix: 16)) phys 0x\(String(mapping.physicalStart, radix: 16)) \(orders) \(model) \(pattern.name) \(tables)")
                    }
                }
            }
        }
    }

    @Test(arguments: [0, 4 * KiB, 2 * MiB - 4 * KiB, 2 * MiB + 4 * KiB, GiB - 4 * KiB, GiB - 2 * MiB])
    func smallMappingsAroundSlotBoundaries(skew: UInt64) throws {
        // Lengths from one page to several 2 MiB slots, starting anywhere near a 2 MiB or 1 GiB
        // boundary, with the bus address aligned or not.
        for length in [4 * KiB, 8 * KiB, 2 * MiB, 2 * MiB + 4 * KiB, 6 * MiB + 12 * KiB] {
            for physical in [0x1_0000_0000, 0x1_0000_0000 + 4 * KiB, 0xfe20_3000] as [UInt64] {
                try check(MappingGeometry(virtualStart: base + skew, length: length, physicalStart: physical))
            }
        }
    }

    @Test func mappingsAcrossOneGiBSlots() throws {
        // Whole 1 GiB slots, interior ones counted once and multiplied: 2-3 GiB mappings, aligned
        // and skewed, with the bus address aligned to 1 GiB, to 2 MiB, or to a page only.
        // (The reference walks every page: a few mappings of 1-3 GiB keep this to seconds.)
        for (skew, length, physical, pattern) in [(0, 3 * GiB, 0x40_0000_0000, AccessPattern.reverse),
                                                  (GiB - 4 * KiB, GiB + 8 * KiB, 0x40_0000_0000, .linear),
                                                  (GiB - 2 * MiB, GiB + 4 * MiB, 0x40_0020_0000, .random(seed: 5))] as [(UInt64, UInt64, UInt64, AccessPattern)] {
            let mapping = try MappingGeometry(virtualStart: base + skew, length: length, physicalStart: physical)
            try check(mapping, patterns: [pattern], tableSets: [[], [TableSlot(order: 18, address: base + skew + GiB), TableSlot(order: 9, address: base + skew + 6 * MiB)]],
                      orderSets: [[0, 9, 18]], models: [.linux612, .linux612Unfixed])
        }
    }

    @Test func explicitPagesAndObservedWalksEqualTheReference() throws {
        let mapping = try MappingGeometry(virtualStart: base + GiB - 4 * MiB, length: 12 * MiB, physicalStart: 0x1_0000_0000)
        let lists: [AccessPattern] = [.pages([0, 0, 1, 1024, 3071, 512, 2048, 1024]), .pages(Array(stride(from: 3071, through: 0, by: -7)))]
        try check(mapping, patterns: lists)
        for model in Self.models {
            for pattern in Self.patterns {
                var steps: [FaultStep] = []
                var referenceSteps: [FaultStep] = []
                let observed = try FaultPlanner(mapping: mapping, model: model).predict(pattern) { steps.append($0) }
                let expected = try ReferencePlanner(mapping: mapping, model: model).predict(pattern) { referenceSteps.append($0) }
                #expect(observed == expected)
                #expect(steps == referenceSteps)
                #expect(try FaultPlanner(mapping: mapping, model: model).predict(pattern) == expected)
            }
        }
    }

    @Test func randomOrderIsABijectionForEveryCount() throws {
        for count in [0, 1, 2, 3, 4, 5, 17, 64, 1000, 4096, 65537] as [UInt64] {
            let order = try AccessPattern.random(seed: count).pageOrder(pageCount: count)
            #expect(order.count == Int(count))
            #expect(Set(order).count == Int(count))
            #expect(order.allSatisfy { $0 < count })
        }
        // Not the identity, and different seeds give different orders.
        let a = try AccessPattern.random(seed: 1).pageOrder(pageCount: 4096)
        let b = try AccessPattern.random(seed: 2).pageOrder(pageCount: 4096)
        #expect(a != Array(0..<4096) && a != b)
        // Fixed output for a seed, on every platform.
        #expect(Array(a.prefix(6)) == [2589, 1866, 406, 30, 1022, 3630])
    }

    @Test func randomOrderOverSixteenMillionPagesNeedsNoTable() throws {
        // A 64 GiB BAR: the order is computed as it goes; a few positions from far apart.
        let permutation = SeededPermutation(count: 1 << 24, seed: 9)
        let sample = (0..<1000).map { permutation.image(of: UInt64($0) * 16_000 + 7) }
        #expect(Set(sample).count == 1000)
        #expect(sample.allSatisfy { $0 < 1 << 24 })
    }

    @Test func hugeMappingsArePlannedByBlocks() throws {
        // 2^56 bytes at a 4 KiB skew: 2^44 pages, 2^35 + 1 PMD slots, 2^26 + 1 PUD slots. The
        // page-by-page planner allocated 32 GiB for this and died.
        let mapping = try MappingGeometry(virtualStart: base + 4 * KiB, length: 1 << 56, physicalStart: 1 << 56)
        let clock = ContinuousClock()
        let began = clock.now
        let prediction = try FaultPlanner(mapping: mapping).predict(.linear)
        #expect(clock.now - began < .seconds(1))
        #expect(histogram(prediction) == ["0:inserted x\(1 << 44)", "9:fallback x\(2 * ((1 << 35) + 1))", "18:fallback x\((1 << 26) + 1)"])
        #expect(try FaultPlanner(mapping: mapping).predict(.random(seed: 3)) == prediction)
        // At vfioctl's placement: 2^26 PUD mappings.
        let placed = try MappingGeometry(virtualStart: base, length: 1 << 56, physicalStart: 1 << 56)
        #expect(histogram(try FaultPlanner(mapping: placed).predict(.reverse)) == ["18:inserted x\(1 << 26)"])
    }

    @Test func twoHundredFiftySixGiBInMilliseconds() throws {
        let clock = ContinuousClock()
        let began = clock.now
        let plan = try AreaPlan.make(physicalStart: 0x400_0000_0000, length: 256 * GiB, skew: 4 * KiB)
        #expect(clock.now - began < .milliseconds(500))
        #expect(plan.placements.first?.fixed.mappingsByOrder == [18: 256])
        #expect(plan.placements.last?.fixed.mappingsByOrder == [0: 256 * GiB / (4 * KiB)])
    }

    @Test func randomUnderTheOlderRuleHasALimit() throws {
        let mapping = try MappingGeometry(virtualStart: base, length: 1 << 50, physicalStart: 0)
        #expect(throws: PlacementError.self) { try FaultPlanner(mapping: mapping, model: .linux612Unfixed).predict(.random(seed: 1)) }
    }

    /// The greedy walk block by block, as `minimumMappings` was.
    static func greedyMinimum(_ physicalStart: UInt64, _ length: UInt64, orders: [Int]) -> [Int: UInt64] {
        var counts: [Int: UInt64] = [:]
        var position = physicalStart
        let end = physicalStart + length
        while position < end {
            for order in orders.reversed() {
                let size = PageGeometry.bytes(order: order)
                if position % size == 0, size <= end - position {
                    counts[order, default: 0] += 1
                    position += size
                    break
                }
            }
        }
        return counts
    }

    @Test func minimumMappingsByOrderEqualTheGreedyWalk() throws {
        var generator = SplitMix64(seed: 11)
        for orders in Self.orderSets {
            let geometry = try PageGeometry(orders: orders)
            // The walk is per block: without 2 MiB pages, shorter ranges keep it quick.
            let longest = orders.contains(9) ? 3 * GiB : 64 * MiB
            for _ in 0..<200 {
                let start = (generator.next() % (8 * GiB)) & ~(4 * KiB - 1)
                let length = ((generator.next() % longest) & ~(4 * KiB - 1)) + 4 * KiB
                #expect(Placement.minimumMappings(physicalStart: start, length: length, geometry: geometry)
                        == Self.greedyMinimum(start, length, orders: orders), "0x\(String(start, radix: 16))+0x\(String(length, radix: 16)) \(orders)")
            }
        }
    }

    @Test func minimumMappingsOfHugeRangesAreImmediate() {
        // 2^62 bytes: 2^32 blocks of 1 GiB, which the walk took one by one.
        #expect(Placement.minimumMappings(physicalStart: 1 << 62, length: 1 << 62) == [18: 1 << 32])
        #expect(Placement.minimumMappings(physicalStart: 4 * KiB, length: 1 << 62) == [0: 512, 9: 511, 18: (1 << 32) - 1])
        // A range running past 2^64 (bad sysfs data) is cut there instead of trapping.
        #expect(Placement.minimumMappings(physicalStart: UInt64.max - GiB + 1, length: 2 * GiB) == [0: 511, 9: 511])
    }

    @Test func skewPastTheAddressSpaceIsAnError() throws {
        #expect(throws: PlacementError.addressOverflow(what: "vfioctl's placement moved by the skew 0xfffffffffffff000")) {
            try AreaPlan.make(physicalStart: 0xfe00_0000, length: 2 * MiB, skew: 0xffff_ffff_ffff_f000)
        }
        // A bus address at the top of the space: the page-aligned strategy wraps its residue.
        let plan = try AreaPlan.make(physicalStart: UInt64.max - 4 * MiB + 1, length: 2 * MiB)
        #expect(plan.minimumMappings == [9: 1])
    }
}
