import KVM
import Synchronization
import TestKit
import PageAlignment
import Testing
import VFIO
@testable import Passthrough

/// Shared memory standing in for a VFIO BAR mmap; reports when it is released, and whether
/// the VM still had a slot pointing into it at that moment.
final class FakeBARArea: MemslotBacking {
    let memory: GuestMemory
    let onRelease: (FakeBARArea) -> Void
    init(size: Int, onRelease: @escaping (FakeBARArea) -> Void = { _ in }) throws {
        memory = try GuestMemory(size: size, backing: .shared(name: "fake-bar-area"))
        self.onRelease = onRelease
    }
    var hostAddress: UInt64 { memory.hostAddress }
    var size: Int { memory.size }
    deinit { onRelease(self) }
}

/// A fake device region: the mapped areas read from their shared memory (as the device would
/// answer a pread of them), the rest from `gapValue`. Counts accesses; records writes.
final class FakeRegion {
    let index: UInt32
    var areas: [(offset: UInt64, area: FakeBARArea)]
    var reads = 0
    var writes: [(offset: UInt64, value: UInt64, width: Int)] = []
    init(index: UInt32, areas: [(offset: UInt64, area: FakeBARArea)]) {
        self.index = index
        self.areas = areas
    }
    static func gapValue(_ offset: UInt64) -> UInt64 { 0xdead_0000 | (offset & 0xffff) }

    func read(_ offset: UInt64, _ width: AccessWidth) throws(PassthroughError) -> UInt64 {
        reads += 1
        for (start, area) in areas where offset >= start && offset + UInt64(width.rawValue) <= start + UInt64(area.size) {
            let bytes = try Self.kvmCall { () throws(KVMError) in try area.memory.read(at: Int(offset - start), count: width.rawValue) }
            return bytes.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        }
        return Self.gapValue(offset) & width.mask
    }

    static func kvmCall<T>(_ body: () throws(KVMError) -> T) throws(PassthroughError) -> T {
        do { return try body() } catch { throw .kvm(error) }
    }

    var access: RegionAccess {
        RegionAccess(
            read: { (region, offset, width) throws(PassthroughError) in
                guard region == self.index else { throw .vfio(.noSuchRegion(index: region, count: self.index + 1)) }
                return try self.read(offset, width)
            },
            write: { (value, region, offset, width) throws(PassthroughError) in
                guard region == self.index else { throw .vfio(.noSuchRegion(index: region, count: self.index + 1)) }
                self.writes.append((offset, value, width.rawValue))
            })
    }
}

@Suite("Passthrough with a fake BAR on /dev/kvm", .enabled(if: KVMAvailability.present, "needs a usable /dev/kvm (kvm module loaded, run as root or in group kvm)"))
struct FakeBARPassthroughTests {
    static let window: Range<UInt64> = 0x1000_0000..<0xfec0_0000

    /// Fills an area with a pattern that differs per dword and per area.
    static func fill(_ area: FakeBARArea, seed: UInt32) throws {
        var bytes: [UInt8] = []
        for index in 0..<(area.size / 4) {
            let word = UInt32(truncatingIfNeeded: index) &* 0x9e37_79b9 ^ seed
            bytes += (0..<4).map { UInt8(truncatingIfNeeded: word >> (8 * UInt32($0))) }
        }
        try area.memory.write(bytes, at: 0)
    }

    /// A sparse BAR (64 KiB region, areas at 0 and 0x8000, a gap between, like a BAR around an
    /// MSI-X table) and a second whole-region BAR. The guest reads dwords in both areas, in the
    /// gap and in the other BAR: with the slots present only the gap reads exit (served by the
    /// region reader); with them deleted every read exits; re-added, back to the gap only. The
    /// values are the same in all three runs and equal to what the region reader says.
    @Test func readsAreRightWithSlotsPresentAbsentAndBack() throws {
        let guest = try ProbeGuest(system: KVMSystem())
        let low = try FakeBARArea(size: 0x4000), high = try FakeBARArea(size: 0x8000), other = try FakeBARArea(size: 0x1000)
        try Self.fill(low, seed: 0x1111_1111)
        try Self.fill(high, seed: 0x2222_2222)
        try Self.fill(other, seed: 0x3333_3333)
        let sparse = FakeRegion(index: 0, areas: [(0, low), (0x8000, high)])
        let whole = FakeRegion(index: 2, areas: [(0, other)])
        let regions = RegionAccess(
            read: { (region, offset, width) throws(PassthroughError) in
                try (region == 0 ? sparse : whole).read(offset, width)
            },
            write: { _, _, _, _ throws(PassthroughError) in })
        let bars = [
            BARMemory(bar: 0, regionIndex: 0, regionSize: 0x10000, areas: [(0, low), (0x8000, high)]),
            BARMemory(bar: 2, regionIndex: 2, regionSize: 0x1000, areas: [(0, other)]),
        ]
        let memslots = try BARMemslots(vm: guest.vm, bars: bars, window: Self.window, reserved: [guest.ramRange],
                                       regions: regions)
        #expect(memslots.toggles.count == 3)
        #expect(guest.vm.memslots.count == 4)
        for toggle in memslots.toggles { #expect(guest.vm.memslots[toggle.slot.id]?.kind == .deviceMemory) }

        let offsets: [(bar: Int, offset: UInt64, mapped: Bool)] = [
            (0, 0, true), (0, 0x3ffc, true), (0, 0x4000, false), (0, 0x7ffc, false), (0, 0x8000, true), (0, 0xfffc, true),
            (0, 0x1234, true), (2, 0, true), (2, 0xffc, true), (0, 0x9abc, true),
        ]
        var addresses: [UInt32] = []
        for read in offsets {
            let gpa = try #require(memslots.guestPhysicalAddress(bar: read.bar, offset: read.offset))
            addresses.append(try #require(UInt32(exactly: gpa)))
        }
        var expected: [UInt32] = []
        for read in offsets { expected.append(UInt32(try (read.bar == 0 ? sparse : whole).read(read.offset, .dword))) }
        sparse.reads = 0
        whole.reads = 0
        let gapReads = offsets.filter { !$0.mapped }.count

        let present = try guest.readDwords(at: addresses, memslots: memslots)
        #expect(present.values == expected)
        #expect(present.mmioExits == gapReads, "only the gap between the areas exits while the slots are present")
        #expect(present.ioExits == offsets.count)

        try memslots.setPresent(false)
        #expect(!memslots.isPresent)
        #expect(guest.vm.memslots.count == 1, "only RAM is left")
        let absent = try guest.readDwords(at: addresses, memslots: memslots)
        #expect(absent.values == expected)
        #expect(absent.mmioExits == offsets.count, "every read exits while the slots are deleted")

        try memslots.setPresent(true)
        let back = try guest.readDwords(at: addresses, memslots: memslots)
        #expect(back.values == expected)
        #expect(back.mmioExits == gapReads)
        #expect(sparse.reads + whole.reads == gapReads + offsets.count + gapReads, "each MMIO exit is one region read")
        #expect(memslots.servedReads == gapReads + offsets.count + gapReads)

        // A value changed behind the guest's back (by the device) is seen both ways.
        try low.memory.write([0x78, 0x56, 0x34, 0x12], at: 0)
        #expect(try guest.readDwords(at: [addresses[0]], memslots: memslots).values == [0x1234_5678])
        try memslots.setPresent(false)
        #expect(try guest.readDwords(at: [addresses[0]], memslots: memslots).values == [0x1234_5678])
    }

    /// MMIO writes reach the region writer at the right offset and width; an exit outside every
    /// BAR is refused, and other exits are left to the caller.
    @Test func writesAndStrayExits() throws {
        let guest = try ProbeGuest(system: KVMSystem())
        let area = try FakeBARArea(size: 0x1000)
        let region = FakeRegion(index: 1, areas: [(0, area)])
        let memslots = try BARMemslots(vm: guest.vm, bars: [BARMemory(bar: 1, regionIndex: 1, regionSize: 0x2000, areas: [(0, area)])],
                                       window: Self.window, reserved: [guest.ramRange], regions: region.access)
        let base = try #require(memslots.guestPhysicalAddress(bar: 1, offset: 0))
        #expect(try memslots.serve(.mmio(address: base + 0x1008, isWrite: true, length: 4, data: [0x44, 0x33, 0x22, 0x11]), on: guest.vcpu))
        #expect(try memslots.serve(.mmio(address: base + 0x1ffe, isWrite: true, length: 2, data: [0xcd, 0xab]), on: guest.vcpu))
        #expect(region.writes.map(\.offset) == [0x1008, 0x1ffe])
        #expect(region.writes.map(\.value) == [0x1122_3344, 0xabcd])
        #expect(region.writes.map(\.width) == [4, 2])
        #expect(memslots.servedWrites == 2)
        #expect(throws: PassthroughError.unroutedMMIO(address: base + 0x2000, length: 4, isWrite: true)) {
            try memslots.serve(.mmio(address: base + 0x2000, isWrite: true, length: 4, data: [0, 0, 0, 0]), on: guest.vcpu)
        }
        #expect(throws: PassthroughError.unroutedMMIO(address: base + 0x1ffe, length: 4, isWrite: false)) {
            try memslots.serve(.mmio(address: base + 0x1ffe, isWrite: false, length: 4, data: []), on: guest.vcpu)
        }
        #expect(try !memslots.serve(.halt, on: guest.vcpu))
    }

    /// A slot never outlives its mapping: while the slots exist the VM keeps the areas alive even
    /// when nothing else refers to them; detaching deletes the slots, and the areas are released
    /// only then, with no slot left pointing into them.
    @Test func mappingsAreReleasedOnlyAfterTheirSlotsAreDeleted() throws {
        let guest = try ProbeGuest(system: KVMSystem())
        let releasedWithSlot = Mutex<[UInt64]>([])
        let released = Mutex<Int>(0)
        let vm = guest.vm
        let check: (FakeBARArea) -> Void = { area in
            released.withLock { $0 += 1 }
            if vm.memslots.allSlots.contains(where: { $0.userspaceAddress == area.hostAddress }) {
                releasedWithSlot.withLock { $0.append(area.hostAddress) }
            }
        }
        weak var weakArea: FakeBARArea?
        var memslots: BARMemslots?
        do {
            let area = try FakeBARArea(size: 0x2000, onRelease: check)
            weakArea = area
            memslots = try BARMemslots(vm: vm, bars: [BARMemory(bar: 0, regionIndex: 0, regionSize: 0x2000, areas: [(0, area)])],
                                       window: Self.window, reserved: [guest.ramRange],
                                       regions: FakeRegion(index: 0, areas: []).access)
        }
        #expect(weakArea != nil, "the slot holder keeps the mapping")
        try memslots?.setPresent(false)
        try memslots?.setPresent(true)
        #expect(weakArea != nil)
        memslots = nil   // deinit detaches first
        #expect(weakArea == nil, "released once the holder and the VM let go")
        #expect(released.withLock { $0 } == 1)
        #expect(releasedWithSlot.withLock { $0 } == [], "no slot pointed into the mapping when it was released")
        #expect(vm.memslots.count == 1)
    }

    /// If one area's slot cannot be added, the slots added before it are deleted again.
    @Test func aFailedAddRollsBack() throws {
        let guest = try ProbeGuest(system: KVMSystem())
        let areas = try (0..<3).map { _ in try FakeBARArea(size: 0x1000) }
        let bars = [BARMemory(bar: 0, regionIndex: 0, regionSize: 0x3000, areas: [(0, areas[0]), (0x1000, areas[1]), (0x2000, areas[2])])]
        // An allocator that hands out RAM's slot 0: the first add fails, nothing is left behind.
        #expect(throws: PassthroughError.self) {
            _ = try BARMemslots(vm: guest.vm, bars: bars, window: Self.window, reserved: [guest.ramRange],
                                allocator: FixedSlots([0]), regions: FakeRegion(index: 0, areas: []).access)
        }
        #expect(guest.vm.memslots.count == 1)
        // Slot 6 in use from the second area on: the first area's slot 5 is deleted again.
        let extra = try GuestMemory(size: 0x1000)
        try guest.vm.addSlot(MemslotID(slot: 6), guestPhysicalAddress: 0x30_0000, memory: extra)
        #expect(throws: PassthroughError.self) {
            _ = try BARMemslots(vm: guest.vm, bars: bars, window: Self.window, reserved: [guest.ramRange],
                                allocator: FixedSlots([5, 6, 7]), regions: FakeRegion(index: 0, areas: []).access)
        }
        #expect(guest.vm.memslots.count == 2, "RAM and the extra slot only")
        #expect(guest.vm.memslots[MemslotID(slot: 5)] == nil)
        // An allocator with nothing left: the typed error, with the VM's limit.
        #expect(throws: PassthroughError.noFreeMemslot(limit: guest.vm.memslots.slotsPerAddressSpace)) {
            _ = try BARMemslots(vm: guest.vm, bars: bars, window: Self.window, reserved: [guest.ramRange],
                                allocator: FixedSlots([]), regions: FakeRegion(index: 0, areas: []).access)
        }
        // The default, the lowest free number: RAM is 0, the extra slot 6, so 1, 2, 3.
        let placed = try BARMemslots(vm: guest.vm, bars: bars, window: Self.window, reserved: [guest.ramRange],
                                     regions: FakeRegion(index: 0, areas: []).access)
        #expect(guest.vm.memslots.allSlots.map(\.id.slot) == [0, 1, 2, 3, 6])
        try placed.detach()
    }

    /// At a size where huge pages matter (4 MiB of shared memory standing in for a BAR): the
    /// planner's gpa is congruent to the mapping modulo 2 MiB, which the KVM layer demands of
    /// device memory, and the guest reads through it.
    @Test func hugeCongruentSlotIsAcceptedAndReadable() throws {
        let guest = try ProbeGuest(system: KVMSystem())
        let area = try FakeBARArea(size: 4 << 20)
        try area.memory.write([0xef, 0xbe, 0xad, 0xde], at: 0x20_0000)
        let region = FakeRegion(index: 2, areas: [(0, area)])
        let memslots = try BARMemslots(vm: guest.vm, bars: [BARMemory(bar: 2, regionIndex: 2, regionSize: 4 << 20, areas: [(0, area)])],
                                       window: Self.window, reserved: [guest.ramRange], regions: region.access)
        let placed = try #require(memslots.bars.first?.areas.first)
        #expect(placed.hugePageCongruence == 2 << 20)
        #expect(HugePages.isCongruent(placed.guestPhysicalAddress, area.hostAddress, modulo: 2 << 20))
        let run = try guest.readDwords(at: [UInt32(placed.guestPhysicalAddress + 0x20_0000)], memslots: memslots)
        #expect(run.values == [0xdead_beef])
        #expect(run.mmioExits == 0)
    }
}

/// Hands out the given slot numbers in order (whether free or not), then none.
final class FixedSlots: MemslotAllocator {
    private var numbers: [UInt16]
    init(_ numbers: [UInt16]) { self.numbers = numbers }
    func nextSlot(in table: MemslotTable) -> MemslotID? { numbers.isEmpty ? nil : MemslotID(slot: numbers.removeFirst()) }
}
