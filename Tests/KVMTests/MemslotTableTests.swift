import PageAlignment
import Testing
@testable import KVM

/// The pure memslot table: every rule, with no kernel involved.
@Suite("MemslotTable")
struct MemslotTableTests {
    let page: UInt64 = 4096
    func table(slots: Int = 8, spaces: Int = 2, flags: MemslotFlags = [.logDirtyPages, .readOnly]) -> MemslotTable {
        MemslotTable(slotsPerAddressSpace: slots, addressSpaces: spaces, pageSize: 4096, allowedFlags: flags)
    }
    func slot(_ n: UInt16, _ gpa: UInt64, _ size: UInt64, host: UInt64 = 0x7f00_0000_0000, space: UInt16 = 0,
              flags: MemslotFlags = []) -> Memslot {
        Memslot(id: MemslotID(slot: n, addressSpace: space), guestPhysicalAddress: gpa, size: size,
                userspaceAddress: host, flags: flags)
    }

    @Test func addAndLookup() throws {
        var t = table()
        try t.add(slot(0, 0, 0x10000))
        try t.add(slot(1, 0x10000, 0x2000, host: 0x7f00_0001_0000))
        #expect(t.count == 2)
        #expect(t.lookup(guestPhysicalAddress: 0)?.id.slot == 0)
        #expect(t.lookup(guestPhysicalAddress: 0xffff)?.id.slot == 0)
        #expect(t.lookup(guestPhysicalAddress: 0x10000)?.id.slot == 1)
        #expect(t.lookup(guestPhysicalAddress: 0x11fff)?.id.slot == 1)
        #expect(t.lookup(guestPhysicalAddress: 0x12000) == nil)
        #expect(t.lookup(guestPhysicalAddress: 0, addressSpace: 1) == nil)
        #expect(t.slots().map(\.id.slot) == [0, 1])
    }

    @Test func adjacentSlotsStaySeparate() throws {
        var t = table()
        try t.add(slot(0, 0, 0x1000))
        try t.add(slot(1, 0x1000, 0x1000, host: 0x7f00_0000_0000 + 0x1000))  // contiguous in gpa and host
        #expect(t.count == 2)
        #expect(t[MemslotID(slot: 0)]?.size == 0x1000)
        #expect(t[MemslotID(slot: 1)]?.size == 0x1000)
    }

    /// Every kind of overlap: same range, inside, containing, touching either end by one page.
    @Test(arguments: [
        (UInt64(0x10000), UInt64(0x10000)),  // identical
        (0x11000, 0x1000),                   // inside
        (0x0f000, 0x20000),                  // containing
        (0x0f000, 0x2000),                   // over the start
        (0x1f000, 0x2000),                   // over the end
    ])
    func overlapsAreRejected(gpa: UInt64, size: UInt64) throws {
        var t = table()
        try t.add(slot(0, 0x10000, 0x10000))
        #expect(throws: MemslotError.overlap(MemslotID(slot: 1), with: MemslotID(slot: 0), range: gpa..<(gpa + size))) {
            try t.add(slot(1, gpa, size))
        }
        #expect(t.count == 1)
    }

    @Test func touchingIsNotOverlapping() throws {
        var t = table()
        try t.add(slot(0, 0x10000, 0x10000))
        try t.add(slot(1, 0x0f000, 0x1000))
        try t.add(slot(2, 0x20000, 0x1000))
        #expect(t.count == 3)
    }

    @Test func sameRangeInAnotherAddressSpaceIsFine() throws {
        var t = table()
        try t.add(slot(0, 0, 0x10000))
        try t.add(slot(0, 0, 0x10000, space: 1))
        #expect(t.count == 2)
        #expect(t.lookup(guestPhysicalAddress: 0x100, addressSpace: 1)?.id == MemslotID(slot: 0, addressSpace: 1))
    }

    @Test func misalignmentIsRejected() {
        let t = table()
        #expect(throws: MemslotError.misaligned(MemslotID(slot: 0), field: "guest physical address", value: 0x800, pageSize: page)) {
            try t.validateAdd(slot(0, 0x800, 0x1000))
        }
        #expect(throws: MemslotError.misaligned(MemslotID(slot: 0), field: "size", value: 0x1800, pageSize: page)) {
            try t.validateAdd(slot(0, 0, 0x1800))
        }
        #expect(throws: MemslotError.misaligned(MemslotID(slot: 0), field: "host address", value: 0x7f00_0000_0010, pageSize: page)) {
            try t.validateAdd(slot(0, 0, 0x1000, host: 0x7f00_0000_0010))
        }
    }

    @Test func emptyOverflowingAndOutOfRangeSlotsAreRejected() {
        let t = table(slots: 8, spaces: 2)
        #expect(throws: MemslotError.emptySlot(MemslotID(slot: 0))) { try t.validateAdd(slot(0, 0, 0)) }
        #expect(throws: MemslotError.addressOverflow(MemslotID(slot: 0))) {
            try t.validateAdd(slot(0, UInt64.max - 0xfff, 0x2000))
        }
        #expect(throws: MemslotError.slotOutOfRange(MemslotID(slot: 8), slotsPerAddressSpace: 8, addressSpaces: 2)) {
            try t.validateAdd(slot(8, 0, 0x1000))
        }
        #expect(throws: MemslotError.slotOutOfRange(MemslotID(slot: 0, addressSpace: 2), slotsPerAddressSpace: 8, addressSpaces: 2)) {
            try t.validateAdd(slot(0, 0, 0x1000, space: 2))
        }
    }

    @Test func flagsTheHostLacksAreRejected() {
        let t = table(flags: [.logDirtyPages])
        #expect(throws: MemslotError.unsupportedFlags(MemslotID(slot: 0), flags: MemslotFlags.readOnly.rawValue)) {
            try t.validateAdd(slot(0, 0, 0x1000, flags: .readOnly))
        }
        #expect(throws: MemslotError.unsupportedFlags(MemslotID(slot: 0), flags: 0x80)) {
            try t.validateAdd(slot(0, 0, 0x1000, flags: MemslotFlags(rawValue: 0x80)))
        }
    }

    @Test func slotNumberInUseIsRejected() throws {
        var t = table()
        try t.add(slot(3, 0, 0x1000))
        #expect(throws: MemslotError.slotInUse(MemslotID(slot: 3))) { try t.add(slot(3, 0x10000, 0x1000)) }
        #expect(t.firstFreeSlot() == MemslotID(slot: 0))
    }

    /// The one allocator: the lowest number not in use (numbers of deleted slots come back),
    /// never one at or past the VM's limit, address space 0 only.
    @Test func lowestFreeMemslotFillsGapsAndStopsAtTheLimit() throws {
        var t = table(slots: 4)
        let allocator = LowestFreeMemslot()
        #expect(allocator.nextSlot(in: t) == MemslotID(slot: 0))
        try t.add(slot(0, 0, 0x1000))
        try t.add(slot(2, 0x2000, 0x1000))
        try t.add(slot(0, 0, 0x1000, space: 1))
        #expect(allocator.nextSlot(in: t) == MemslotID(slot: 1), "the gap below a used number")
        try t.add(slot(1, 0x1000, 0x1000))
        #expect(allocator.nextSlot(in: t) == MemslotID(slot: 3))
        try t.add(slot(3, 0x3000, 0x1000))
        #expect(allocator.nextSlot(in: t) == nil, "4 of 4 in use")
        _ = try t.remove(MemslotID(slot: 2))
        #expect(allocator.nextSlot(in: t) == MemslotID(slot: 2), "a deleted slot's number is used again")
    }

    @Test func removeFreesTheRangeAndTheNumber() throws {
        var t = table()
        try t.add(slot(0, 0, 0x10000))
        let removed = try t.remove(MemslotID(slot: 0))
        #expect(removed.size == 0x10000)
        #expect(t.isEmpty)
        #expect(throws: MemslotError.noSuchSlot(MemslotID(slot: 0))) { try t.remove(MemslotID(slot: 0)) }
        try t.add(slot(0, 0x8000, 0x10000))
        #expect(t.lookup(guestPhysicalAddress: 0x8000)?.id.slot == 0)
    }

    @Test func moveChecksOverlapWithOthersButNotItself() throws {
        var t = table()
        try t.add(slot(0, 0, 0x10000))
        try t.add(slot(1, 0x20000, 0x10000))
        // Sliding over part of its own old range is fine.
        try t.move(MemslotID(slot: 0), to: 0x8000)
        #expect(t.lookup(guestPhysicalAddress: 0x17fff)?.id.slot == 0)
        #expect(t.lookup(guestPhysicalAddress: 0x0) == nil)
        #expect(throws: MemslotError.overlap(MemslotID(slot: 0), with: MemslotID(slot: 1), range: 0x18000..<0x28000)) {
            try t.move(MemslotID(slot: 0), to: 0x18000)
        }
        #expect(throws: MemslotError.misaligned(MemslotID(slot: 0), field: "guest physical address", value: 0x100, pageSize: page)) {
            try t.move(MemslotID(slot: 0), to: 0x100)
        }
        #expect(throws: MemslotError.noSuchSlot(MemslotID(slot: 5))) { try t.move(MemslotID(slot: 5), to: 0) }
        #expect(t[MemslotID(slot: 0)]?.guestPhysicalAddress == 0x8000)  // unchanged by the failures
    }

    @Test func onlyDirtyLoggingChangesInPlace() throws {
        var t = table()
        try t.add(slot(0, 0, 0x1000))
        try t.setFlags(MemslotID(slot: 0), .logDirtyPages)
        #expect(t[MemslotID(slot: 0)]?.flags == .logDirtyPages)
        try t.setFlags(MemslotID(slot: 0), [])
        #expect(throws: MemslotError.readOnlyChange(MemslotID(slot: 0))) { try t.setFlags(MemslotID(slot: 0), .readOnly) }
        try t.add(slot(1, 0x1000, 0x1000, flags: .readOnly))
        #expect(throws: MemslotError.readOnlyChange(MemslotID(slot: 1))) { try t.setFlags(MemslotID(slot: 1), []) }
        try t.setFlags(MemslotID(slot: 1), [.readOnly, .logDirtyPages])
    }

    /// classify reads a raw region the way KVM does.
    @Test func classifyFollowsKVM() throws {
        var t = table()
        let base = slot(0, 0x10000, 0x4000)
        #expect(try t.classify(base) == .add)
        try t.add(base)
        #expect(try t.classify(base) == MemslotTable.Change.none)
        var moved = base; moved.guestPhysicalAddress = 0x40000
        #expect(try t.classify(moved) == .move)
        var logged = base; logged.flags = .logDirtyPages
        #expect(try t.classify(logged) == .flags)
        var deleted = base; deleted.size = 0
        #expect(try t.classify(deleted) == .delete)
        var resized = base; resized.size = 0x8000
        #expect(throws: MemslotError.immutableChange(base.id, field: "size")) { try t.classify(resized) }
        var rehosted = base; rehosted.userspaceAddress += 0x1000
        #expect(throws: MemslotError.immutableChange(base.id, field: "host address")) { try t.classify(rehosted) }
        var readOnly = base; readOnly.flags = .readOnly
        #expect(throws: MemslotError.readOnlyChange(base.id)) { try t.classify(readOnly) }
        #expect(throws: MemslotError.noSuchSlot(MemslotID(slot: 4))) { try t.classify(slot(4, 0, 0)) }
    }

    @Test func kernelSlotNumberPacksTheAddressSpace() {
        let id = MemslotID(slot: 7, addressSpace: 1)
        #expect(id.kernelValue == 0x1_0007)
        #expect(MemslotID(kernelValue: 0x1_0007) == id)
    }

    @Test func messagesSayWhatToDo() {
        #expect(MemslotError.readOnlyChange(MemslotID(slot: 2)).description.contains("delete and add"))
        #expect(MemslotError.overlap(MemslotID(slot: 1), with: MemslotID(slot: 0), range: 0x1000..<0x2000).description
                    == "memslot slot 1 at 0x1000..<0x2000 overlaps slot 0")
    }

    // MARK: Device memory

    @Test func deviceMemoryRefusesDirtyLogging() throws {
        var t = table()
        let id = MemslotID(slot: 0)
        #expect(throws: MemslotError.dirtyLoggingOnDeviceMemory(id)) {
            try t.add(Memslot(id: id, guestPhysicalAddress: 0, size: 0x1000, userspaceAddress: 0x7f00_0000_0000,
                              flags: .logDirtyPages, kind: .deviceMemory))
        }
        try t.add(Memslot(id: id, guestPhysicalAddress: 0, size: 0x1000, userspaceAddress: 0x7f00_0000_0000, kind: .deviceMemory))
        #expect(throws: MemslotError.dirtyLoggingOnDeviceMemory(id)) { try t.setFlags(id, .logDirtyPages) }
        try t.setFlags(id, [])
        var asRAM = Memslot(id: id, guestPhysicalAddress: 0, size: 0x1000, userspaceAddress: 0x7f00_0000_0000)
        #expect(throws: MemslotError.immutableChange(id, field: "kind")) { try t.classify(asRAM) }
        asRAM.kind = .deviceMemory
        #expect(try t.classify(asRAM) == MemslotTable.Change.none)
        // RAM may log.
        try t.add(slot(1, 0x1000, 0x1000, flags: .logDirtyPages))
    }

    @Test func hugePageCongruenceArithmetic() {
        let twoM: UInt64 = 1 << 21, oneG: UInt64 = 1 << 30
        // Too small for any huge page, or holding none aligned: no requirement.
        #expect(HugePages.requiredCongruence(hostAddress: 0x7f00_0000_0000, size: 0x10_0000, pageSizes: HugePages.x86Sizes) == nil)
        #expect(HugePages.requiredCongruence(hostAddress: 0x7f00_0010_0000, size: twoM, pageSizes: HugePages.x86Sizes) == nil)
        // Holds one aligned 2 MiB page, not a 1 GiB one.
        #expect(HugePages.requiredCongruence(hostAddress: 0x7f00_0010_0000, size: 2 * twoM, pageSizes: HugePages.x86Sizes) == twoM)
        #expect(HugePages.requiredCongruence(hostAddress: 0x7f00_0000_0000, size: twoM, pageSizes: HugePages.x86Sizes) == twoM)
        #expect(HugePages.requiredCongruence(hostAddress: 0x7f40_0000_0000, size: oneG, pageSizes: HugePages.x86Sizes) == oneG)
        #expect(HugePages.requiredCongruence(hostAddress: 0x7f40_0020_0000, size: oneG, pageSizes: HugePages.x86Sizes) == twoM)
        #expect(HugePages.requiredCongruence(hostAddress: UInt64.max - 0xfff, size: 0x1000, pageSizes: HugePages.x86Sizes) == nil)
        #expect(HugePages.isCongruent(0x4020_0000, 0x7f00_0020_0000, modulo: twoM))
        #expect(!HugePages.isCongruent(0x4010_0000, 0x7f00_0020_0000, modulo: twoM))
        // Lowest congruent gpa at or above the floor.
        #expect(HugePages.congruentGuestAddress(hostAddress: 0x7f00_0030_0000, size: 4 * twoM, atOrAbove: 0xe000_0000) == 0xe010_0000)
        #expect(HugePages.congruentGuestAddress(hostAddress: 0x7f00_0010_0000, size: 4 * twoM, atOrAbove: 0xe018_0000) == 0xe030_0000)
        #expect(HugePages.congruentGuestAddress(hostAddress: 0x7f40_4000_0000, size: 2 * oneG, atOrAbove: 0x1_0000_0001) == 0x1_4000_0000)
        // No huge page: page alignment only.
        #expect(HugePages.congruentGuestAddress(hostAddress: 0x7f00_0000_1000, size: 0x1000, atOrAbove: 0x1001) == 0x2000)
        #expect(HugePages.congruentGuestAddress(hostAddress: 0x7f00_0010_0000, size: 4 * twoM, atOrAbove: UInt64.max - 0xfff) == nil)
    }

    @Test func incongruentDeviceSlotIsRefusedWithASuggestion() throws {
        var t = table()
        let id = MemslotID(slot: 0)
        let host: UInt64 = 0x7f00_0010_0000
        let bar = Memslot(id: id, guestPhysicalAddress: 0xe000_0000, size: 8 << 20, userspaceAddress: host, kind: .deviceMemory)
        #expect(throws: MemslotError.hugePageIncongruent(id, pageSize: 1 << 21, guestPhysicalAddress: 0xe000_0000,
                                                         hostAddress: host, suggested: 0xe010_0000)) { try t.add(bar) }
        var congruent = bar
        congruent.guestPhysicalAddress = 0xe010_0000
        try t.add(congruent)
        // Moving keeps the rule.
        #expect(throws: MemslotError.self) { try t.move(id, to: 0xe020_0000) }
        try t.move(id, to: 0xe030_0000)
        // RAM slots are not held to it.
        try t.add(slot(1, 0x1000, 8 << 20, host: host))
    }

    @Test func freeDeviceAddressSkipsSlotsAndKeepsCongruence() throws {
        var t = table()
        let host: UInt64 = 0x7f00_0010_0000
        try t.add(slot(0, 0xe000_0000, 0x40_0000))            // 0xe0000000..<0xe0400000
        try t.add(slot(1, 0xe050_0000, 0x1000, host: 0x7f10_0000_0000))
        // The first congruent spot (…0x100000 mod 2 MiB) past both slots with 4 MiB free.
        #expect(t.freeDeviceAddress(size: 4 << 20, hostAddress: host, in: 0xe000_0000..<0xf000_0000) == 0xe070_0000)
        #expect(t.freeDeviceAddress(size: 4 << 20, hostAddress: host, in: 0xe000_0000..<0xe080_0000) == nil)
        #expect(t.freeDeviceAddress(size: 0x1000, hostAddress: 0x7f00_0000_3000, in: 0xe000_0000..<0xf000_0000) == 0xe040_0000)
    }

    /// The range index against a linear scan, over random adds, moves and removes.
    @Test func rangeIndexAgreesWithALinearScan() throws {
        var t = MemslotTable(slotsPerAddressSpace: 3000, pageSize: 4096)
        var generator = SplitMix(seed: 42)
        var live: [UInt16: Range<UInt64>] = [:]
        for _ in 0..<20_000 {
            let number = UInt16(generator.next() % 3000)
            let id = MemslotID(slot: number)
            let gpa = (generator.next() % 8192) * 4096, size = (1 + generator.next() % 4) * 4096
            let range = gpa..<(gpa + size)
            let clash = live.first { $0.key != number && $0.value.overlaps(range) }
            switch generator.next() % 3 {
            case 0 where live[number] == nil:
                if clash == nil { try t.add(slot(number, gpa, size)); live[number] = range } else {
                    #expect(throws: MemslotError.self) { try t.add(slot(number, gpa, size)) }
                }
            case 1 where live[number] != nil:
                let moved = gpa..<(gpa + (live[number].map { $0.upperBound - $0.lowerBound } ?? 0))
                let movedClash = live.first { $0.key != number && $0.value.overlaps(moved) }
                if movedClash == nil { try t.move(id, to: gpa); live[number] = moved } else {
                    #expect(throws: MemslotError.self) { try t.move(id, to: gpa) }
                }
            case 2 where live[number] != nil:
                try t.remove(id)
                live[number] = nil
            default:
                break
            }
            let probe = (generator.next() % 8200) * 4096 + 17
            let expected = live.first { $0.value.contains(probe) }?.key
            #expect(t.lookup(guestPhysicalAddress: probe)?.id.slot == expected)
        }
        #expect(t.count == live.count)
    }
}

/// A small deterministic generator for the randomized table test.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
