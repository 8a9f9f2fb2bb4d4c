import BARPlacement
import Testing

let KiB: UInt64 = 1 << 10
let MiB: UInt64 = 1 << 20
let GiB: UInt64 = 1 << 30
let base: UInt64 = 1 << 40

func plan(_ virtualStart: UInt64, _ length: UInt64, _ physical: UInt64, model: KernelFaultModel = .linux612,
          orders: [Int] = [0, 9, 18], pattern: AccessPattern = .linear, present: [TableSlot] = []) throws -> FaultPrediction {
    let mapping = try MappingGeometry(virtualStart: virtualStart, length: length, physicalStart: physical)
    return try FaultPlanner(mapping: mapping, geometry: PageGeometry(orders: orders), model: model, tablesPresent: present).predict(pattern)
}

/// "order:outcome xN" lines, the way the lab's histogram reads.
func histogram(_ prediction: FaultPrediction) -> [String] {
    prediction.calls.map { "\($0.order):\($0.outcome.rawValue) x\($0.count)" }
}

/// An independent closed form for the fixed rule with every page touched once and clean
/// tables: per 1 GiB slot, either one PUD insert, or a PUD fallback and per 2 MiB region either
/// one PMD insert or (retries + 1) PMD fallbacks and one PTE insert per page. Pattern-free.
func closedForm(_ start: UInt64, _ length: UInt64, _ physical: UInt64, orders: Set<Int> = [0, 9, 18], retry: Bool = true) -> [String: UInt64] {
    var counts: [String: UInt64] = [:]
    let end = start + length
    func fits(_ blockStart: UInt64, _ size: UInt64) -> Bool {
        blockStart >= start && blockStart + size <= end && (physical + (blockStart - start)) % size == 0
    }
    var slot = start & ~(GiB - 1)
    while slot < end {
        if orders.contains(18) && fits(slot, GiB) {
            counts["18:inserted", default: 0] += 1
        } else {
            if orders.contains(18) { counts["18:fallback", default: 0] += 1 }
            var region = max(slot, start & ~(2 * MiB - 1))
            while region < min(slot + GiB, end) {
                if orders.contains(9) && fits(region, 2 * MiB) {
                    counts["9:inserted", default: 0] += 1
                } else {
                    if orders.contains(9) { counts["9:fallback", default: 0] += retry ? 2 : 1 }
                    let pages = (min(region + 2 * MiB, end) - max(region, start)) / (4 * KiB)
                    counts["0:inserted", default: 0] += pages
                }
                region += 2 * MiB
            }
        }
        slot += GiB
    }
    return counts
}

func asDictionary(_ prediction: FaultPrediction) -> [String: UInt64] {
    Dictionary(uniqueKeysWithValues: prediction.calls.map { ("\($0.order):\($0.outcome.rawValue)", $0.count) })
}

@Suite("Fault planner: the lab's measured histograms")
struct MeasuredHistogramTests {
    // Measured in the lab: ivshmem with a 1 GiB backend, BAR physically 1 GiB aligned, linear reads. In
    // those runs the 1 GiB slot above the mapping already held page tables (other mappings of
    // the process), so the kernel made no PUD attempt there.
    let physical: UInt64 = 0x1_0000_0000
    var above: [TableSlot] { [TableSlot(order: 18, address: base + GiB)] }

    @Test func skewZeroIsOnePUD() throws {
        #expect(histogram(try plan(base, GiB, physical, present: above)) == ["18:inserted x1"])
        #expect(histogram(try plan(base, GiB, physical)) == ["18:inserted x1"])
    }

    @Test func skew2MiBIsPMDs() throws {
        #expect(histogram(try plan(base + 2 * MiB, GiB, physical, present: above)) == ["9:inserted x512", "18:fallback x1"])
        // With clean tables the slot above is tried too.
        #expect(histogram(try plan(base + 2 * MiB, GiB, physical)) == ["9:inserted x512", "18:fallback x2"])
    }

    @Test func skew4KiBIsPTEs() throws {
        let prediction = try plan(base + 4 * KiB, GiB, physical, present: above)
        #expect(histogram(prediction) == ["0:inserted x262144", "9:fallback x1026", "18:fallback x1"])
        #expect(prediction.faultingAccesses == 262_144)
        #expect(prediction.mappingsByOrder == [0: 262_144])
    }

    @Test func twoGiBBarAtVfioctlPlacementIsTwoPUDs() throws {
        let prediction = try plan(base, 2 * GiB, 0x8000_0000)
        #expect(histogram(prediction) == ["18:inserted x2"])
        #expect(prediction.faultingAccesses == 2)
    }

    @Test func twoGiBBarAtSkews() throws {
        let physical: UInt64 = 0x8000_0000
        #expect(histogram(try plan(base + 4 * KiB, 2 * GiB, physical)) == ["0:inserted x524288", "9:fallback x2050", "18:fallback x3"])
        #expect(histogram(try plan(base + 2 * MiB, 2 * GiB, physical)) == ["9:inserted x1024", "18:fallback x3"])
        #expect(histogram(try plan(base + 2 * MiB + 4 * KiB, 2 * GiB, physical)) == ["0:inserted x524288", "9:fallback x2050", "18:fallback x3"])
        #expect(histogram(try plan(base + GiB - 2 * MiB, 2 * GiB, physical)) == ["9:inserted x1024", "18:fallback x3"])
    }

    @Test func withoutTheVMALockRetryPMDIsTriedOnce() throws {
        let model = KernelFaultModel(rule: .alignedBlock, retriesPTEFaultUnderMmapLock: false)
        #expect(histogram(try plan(base + 4 * KiB, GiB, physical, model: model, present: above))
                == ["0:inserted x262144", "9:fallback x513", "18:fallback x1"])
    }
}

@Suite("Fault planner: rules and patterns")
struct RuleTests {
    @Test func unfixedKernelReverseNeverGetsHugePages() throws {
        // The first touch of every block is its last page, which the old rule refuses.
        let prediction = try plan(base, 2 * GiB, 0x8000_0000, model: .linux612Unfixed, pattern: .reverse)
        #expect(prediction.mappingsByOrder == [0: 524_288])
        let fixed = try plan(base, 2 * GiB, 0x8000_0000, pattern: .reverse)
        #expect(fixed.mappingsByOrder == [18: 2])
    }

    @Test func unfixedKernelAtOddOffsetFallsBackButFixedDoesNot() throws {
        let pattern = AccessPattern.pages([5, 1000, 600])
        let fixed = try plan(base, 4 * MiB, 0x4000_0000, orders: [0, 9], pattern: pattern)
        #expect(histogram(fixed) == ["9:inserted x2"])   // page 600 lies in page 1000's block: no fault
        let unfixed = try plan(base, 4 * MiB, 0x4000_0000, model: .linux612Unfixed, orders: [0, 9], pattern: pattern)
        #expect(histogram(unfixed) == ["0:inserted x3", "9:fallback x4"])
    }

    @Test func repeatedAccessesDoNotFault() throws {
        let prediction = try plan(base + 4 * KiB, 8 * MiB, 0, pattern: .pages([3, 3, 3, 7]))
        #expect(prediction.faultingAccesses == 2)
        #expect(prediction.accesses == 4)
    }

    @Test func explicitPageOutsideIsAnError() throws {
        #expect(throws: PlacementError.pageOutOfRange(page: 512, pages: 512)) {
            try plan(base, 2 * MiB, 0, pattern: .pages([0, 512]))
        }
    }

    @Test func randomIsADeterministicPermutation() throws {
        let a = try AccessPattern.random(seed: 7).pageOrder(pageCount: 1000)
        let b = try AccessPattern.random(seed: 7).pageOrder(pageCount: 1000)
        let c = try AccessPattern.random(seed: 8).pageOrder(pageCount: 1000)
        #expect(a == b)
        #expect(a != c)
        #expect(a.sorted() == Array(0..<1000))
        #expect(a != Array(0..<1000))
    }

    @Test func linearAndReverseWalkEveryPage() throws {
        var seen: [UInt64] = []
        try AccessPattern.reverse.forEachPage(pageCount: 5) { seen.append($0) }
        #expect(seen == [4, 3, 2, 1, 0])
        seen = []
        try AccessPattern.linear.forEachPage(pageCount: 3) { seen.append($0) }
        #expect(seen == [0, 1, 2])
    }

    @Test func stepsNameEachCallAndMapping() throws {
        var steps: [FaultStep] = []
        _ = try FaultPlanner(mapping: MappingGeometry(virtualStart: base + 4 * KiB, length: 2 * MiB, physicalStart: 0))
            .predict(.pages([0])) { steps.append($0) }
        #expect(steps.count == 1)
        #expect(steps.first?.calls.map { "\($0.order):\($0.outcome.rawValue)" } == ["18:fallback", "9:fallback", "9:fallback", "0:inserted"])
        #expect(steps.first?.installed == InstalledMapping(order: 0, virtualAddress: base + 4 * KiB, physicalAddress: 0))
    }

    @Test func pudOnlyGeometryStillAllocatesThePMDTable() throws {
        // Order 9 unsupported: no PMD attempts; PUD tried once per slot (the walk allocates the
        // PMD table whether or not PMD pages are allowed).
        #expect(histogram(try plan(base + 4 * KiB, 4 * MiB, 0, orders: [0, 18])) == ["0:inserted x1024", "18:fallback x1"])
        #expect(histogram(try plan(base, 4 * MiB, 0, orders: [0])) == ["0:inserted x1024"])
    }
}

@Suite("Fault planner: properties over many geometries")
struct PropertyTests {
    /// Skews, lengths and physical offsets that exercise every boundary case.
    static let skews: [UInt64] = [0, 4 * KiB, 8 * KiB, 2 * MiB - 4 * KiB, 2 * MiB, 2 * MiB + 4 * KiB, 6 * MiB, GiB - 2 * MiB, GiB - 4 * KiB, GiB + 2 * MiB]
    static let lengths: [UInt64] = [4 * KiB, 12 * KiB, 2 * MiB - 4 * KiB, 2 * MiB, 2 * MiB + 4 * KiB, 6 * MiB, 64 * MiB, GiB, GiB + 6 * MiB]
    static let physicals: [UInt64] = [0x1_0000_0000, 0x1_0000_0000 + 4 * KiB, 0x1_0000_0000 + 2 * MiB, 0xfe00_0000, 0x1_4000_1000]

    static func patterns(_ pages: UInt64) -> [AccessPattern] {
        var list: [AccessPattern] = [.linear, .reverse, .random(seed: 1), .random(seed: 99)]
        if pages > 3 { list.append(.pages([pages / 2, 0, pages - 1, pages / 2, pages / 3])) }
        return list
    }

    @Test(arguments: lengths)
    func fixedRuleMatchesTheClosedFormForEveryPattern(length: UInt64) throws {
        // Debug builds walk ~3 M pages a second: the 1 GiB cases get the boundary skews only.
        let skews = length >= GiB ? [4 * KiB, GiB - 2 * MiB] : Self.skews
        let physicals = length >= GiB ? [Self.physicals[4]] : Self.physicals
        for skew in skews {
            for physical in physicals {
                let start = base + skew
                let expected = closedForm(start, length, physical)
                // The big cases are covered linearly; patterns on the smaller ones.
                let patterns: [AccessPattern] = length >= GiB ? [.linear] : [.linear, .reverse, .random(seed: 3)]
                for pattern in patterns {
                    let prediction = try plan(start, length, physical, pattern: pattern)
                    #expect(asDictionary(prediction) == expected, "skew \(skew) length \(length) physical \(physical) \(pattern.name)")
                    #expect(prediction.faultingAccesses == prediction.mappingCount)
                }
            }
        }
    }

    @Test(arguments: [KernelFaultModel.linux612, .linux612Unfixed])
    func mappingsCoverEveryTouchedPageExactlyOnce(model: KernelFaultModel) throws {
        for length in Self.lengths where length <= 6 * MiB {
            for skew in Self.skews {
                for physical in Self.physicals {
                    let mapping = try MappingGeometry(virtualStart: base + skew, length: length, physicalStart: physical)
                    for pattern in Self.patterns(mapping.pageCount) {
                        var cover: [UInt64: Int] = [:]
                        var touched = Set<UInt64>()
                        try pattern.forEachPage(pageCount: mapping.pageCount) { touched.insert($0) }
                        _ = try FaultPlanner(mapping: mapping, model: model).predict(pattern) { step in
                            let size = PageGeometry.bytes(order: step.installed.order)
                            #expect(step.installed.virtualAddress % size == 0)
                            #expect(step.installed.physicalAddress % size == 0)
                            #expect(step.installed.physicalAddress == mapping.physical(at: step.installed.virtualAddress))
                            #expect(step.installed.virtualAddress >= mapping.virtualStart)
                            #expect(step.installed.virtualAddress + size <= mapping.virtualEnd)
                            let first = (step.installed.virtualAddress - mapping.virtualStart) / PageGeometry.pageSize
                            for page in first..<(first + size / PageGeometry.pageSize) { cover[page, default: 0] += 1 }
                            #expect(step.calls.last?.outcome == .inserted)
                            #expect(step.calls.dropLast().allSatisfy { $0.outcome == .fallback })
                        }
                        #expect(cover.values.allSatisfy { $0 == 1 }, "a page mapped twice: skew \(skew) length \(length)")
                        #expect(touched.isSubset(of: Set(cover.keys)), "a touched page left unmapped: skew \(skew) length \(length)")
                    }
                }
            }
        }
    }

    @Test func vfioctlPlacementReachesTheMinimum() throws {
        for length in Self.lengths {
            for physical in length >= GiB ? [Self.physicals[4]] : Self.physicals {
                let start = PlacementStrategy.vfioctl.virtualStart(physicalStart: physical, length: length)
                let minimum = Placement.minimumMappings(physicalStart: physical, length: length)
                let patterns: [AccessPattern] = length >= GiB ? [.linear] : [.linear, .reverse, .random(seed: 5)]
                for pattern in patterns {
                    #expect(try plan(start, length, physical, pattern: pattern).mappingsByOrder == minimum)
                }
                // No placement beats it: every skew gives at least as many mappings.
                for skew in Self.skews where length < GiB {
                    #expect(try plan(start + skew, length, physical).mappingCount >= minimum.values.reduce(0, +))
                }
            }
        }
    }

    @Test func libraryAlignmentAlsoReachesTheMinimum() throws {
        // Congruent only modulo `alignment` (not 1 GiB), at any base: still the minimum.
        for length in Self.lengths where length <= 64 * MiB {
            for physical in Self.physicals {
                let alignment = Placement.alignment(physicalStart: physical, length: length)
                for floor in [base + 4 * KiB, base + 3 * MiB + 8 * KiB, base + GiB - 4 * KiB] {
                    let start = try #require(Placement.congruentAddress(atOrAbove: floor, physicalStart: physical, alignment: alignment))
                    #expect(start >= floor && start < floor + alignment)
                    #expect(try plan(start, length, physical).mappingsByOrder == Placement.minimumMappings(physicalStart: physical, length: length))
                }
            }
        }
    }

    @Test func oldRuleLinearEqualsFixedRuleAtCongruentPlacements() throws {
        for length in Self.lengths where length <= 64 * MiB {
            for physical in Self.physicals {
                let start = PlacementStrategy.vfioctl.virtualStart(physicalStart: physical, length: length)
                #expect(try plan(start, length, physical, model: .linux612Unfixed) == (try plan(start, length, physical)))
            }
        }
    }
}

@Suite("Placement")
struct PlacementTests {
    @Test func alignmentIsTheLargestPageThatFits() {
        #expect(Placement.alignment(physicalStart: 0xfea0_0000, length: MiB) == 4 * KiB)       // edu BAR0
        #expect(Placement.alignment(physicalStart: 0x8000_0000, length: 2 * GiB) == GiB)      // ivshmem BAR2
        #expect(Placement.alignment(physicalStart: MiB, length: 3 * MiB) == 2 * MiB)          // [2M, 4M) fits
        #expect(Placement.alignment(physicalStart: MiB, length: 2 * MiB) == 4 * KiB)          // straddles 2 MiB
        #expect(Placement.alignment(physicalStart: 0x4000_2000, length: 16 * MiB - 8 * KiB) == 2 * MiB) // sparse area after an MSI-X hole
        #expect(Placement.alignment(physicalStart: 0x4000_0000, length: GiB, geometry: try! PageGeometry(orders: [0, 9])) == 2 * MiB)
    }

    @Test func congruentAddress() {
        #expect(Placement.congruentAddress(atOrAbove: 0x7f00_0000_1000, physicalStart: 0x8000_0000, alignment: GiB) == 0x7f00_4000_0000)
        #expect(Placement.congruentAddress(atOrAbove: 0x7f00_0000_1000, physicalStart: 0x4000_3000, alignment: 2 * MiB) == 0x7f00_0000_3000)
        #expect(Placement.congruentAddress(atOrAbove: 0x7f00_0000_4000, physicalStart: 0x4000_3000, alignment: 2 * MiB) == 0x7f00_0020_3000)
        #expect(Placement.congruentAddress(atOrAbove: UInt64.max - 4095, physicalStart: 0x1000, alignment: GiB) == nil)
    }

    @Test func minimumMappings() {
        #expect(Placement.minimumMappings(physicalStart: 0x8000_0000, length: 2 * GiB) == [18: 2])
        #expect(Placement.minimumMappings(physicalStart: 4 * KiB, length: GiB) == [0: 512, 9: 511])
        #expect(Placement.minimumMappings(physicalStart: 0xfea0_0000, length: MiB) == [0: 256])
        #expect(Placement.minimumMappings(physicalStart: 0x4000_2000, length: 16 * MiB - 8 * KiB) == [0: 510, 9: 7])
    }

    @Test func verdictsSayWhyHugePagesNeverHappen() throws {
        let off = try MappingGeometry(virtualStart: base + 4 * KiB, length: 2 * GiB, physicalStart: 0x8000_0000)
        let verdicts = Placement.verdicts(for: off)
        #expect(verdicts.map(\.possible) == [false, false])
        #expect(verdicts.first?.reason?.contains("4 KiB off the physical address modulo 1 GiB") == true)
        let small = try MappingGeometry(virtualStart: base, length: MiB, physicalStart: 0xfea0_0000)
        #expect(Placement.verdicts(for: small).allSatisfy { !$0.possible && $0.reason?.contains("smaller than") == true })
        let good = try MappingGeometry(virtualStart: base, length: 2 * GiB, physicalStart: 0x8000_0000)
        #expect(Placement.verdicts(for: good).allSatisfy { $0.possible })
        let pmdOnly = try MappingGeometry(virtualStart: base + 2 * MiB, length: 2 * GiB, physicalStart: 0x8000_0000)
        #expect(Placement.verdicts(for: pmdOnly).map(\.possible) == [false, true])
    }

    @Test func invalidInputsAreRefused() {
        #expect(throws: PlacementError.notPageAligned(what: "virtual start", value: base + 1)) {
            try MappingGeometry(virtualStart: base + 1, length: 4096, physicalStart: 0)
        }
        #expect(throws: PlacementError.emptyArea) { try MappingGeometry(virtualStart: base, length: 0, physicalStart: 0) }
        #expect(throws: PlacementError.addressOverflow(what: "the virtual range")) {
            try MappingGeometry(virtualStart: UInt64.max - 4095, length: 8192, physicalStart: 0)
        }
        #expect(throws: PlacementError.self) { try PageGeometry(orders: [9, 18]) }
        #expect(throws: PlacementError.self) { try PageGeometry(orders: [0, 12]) }
        #expect(throws: PlacementError.notPageAligned(what: "skew", value: 100)) {
            try AreaPlan.make(physicalStart: 0, length: 2 * MiB, skew: 100)
        }
    }

    @Test func strategiesModelTheNaivePlacements() {
        // A sparse area 8 KiB into a 2 MiB-aligned BAR: size alignment misses the physical offset.
        let physical: UInt64 = 0x4000_2000, length = 16 * MiB - 8 * KiB
        #expect(PlacementStrategy.sizeAligned.virtualStart(physicalStart: physical, length: length) == base + 16 * MiB)
        #expect(PlacementStrategy.pageAligned.virtualStart(physicalStart: physical, length: length) == base + 0x3000)
        #expect(PlacementStrategy.vfioctl.virtualStart(physicalStart: physical, length: length) == base + 0x2000)
    }

    @Test func areaPlanComparesPlacements() throws {
        let area = try AreaPlan.make(physicalStart: 0x4000_2000, length: 16 * MiB - 8 * KiB, skew: 2 * MiB)
        let byLabel = Dictionary(uniqueKeysWithValues: area.placements.map { ($0.label, $0) })
        #expect(area.placements.map(\.label) == ["vfioctl", "page-aligned", "size-aligned", "vfioctl+skew"])
        #expect(byLabel["vfioctl"]?.reachesMinimum == true)
        #expect(byLabel["vfioctl"]?.fixed.mappingsByOrder == [0: 510, 9: 7])
        #expect(byLabel["size-aligned"]?.reachesMinimum == false)
        #expect(byLabel["size-aligned"]?.neverHuge == true)
        #expect(byLabel["page-aligned"]?.neverHuge == true)
        #expect(byLabel["vfioctl+skew"]?.neverHuge == false)   // 2 MiB off: still congruent mod 2 MiB
        #expect(area.alignment == 2 * MiB)
        #expect(area.minimumMappingCount == 517)
    }
}
