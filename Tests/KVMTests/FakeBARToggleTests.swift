import CLinuxUAPI
import Foundation
import Synchronization
import PageAlignment
import Testing
@testable import KVM

/// What the toggling thread and the vCPU thread share. `generation` counts half-toggles: even
/// = stable (slot present when generation / 2 is even), odd = a KVM_SET_USER_MEMORY_REGION in
/// flight. `settled` is the last stable generation the vCPU saw unchanged over a whole run.
private final class ToggleShared: Sendable {
    let generation = Atomic<Int>(0)
    let settled = Atomic<Int>(-1)
    let stop = Atomic<Bool>(false)
    let vcpuGone = Atomic<Bool>(false)
}

/// Hands a non-Sendable object to exactly one other thread, which alone uses it from then on
/// (the test thread only reads it again after that thread has finished).
private final class HandOver<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

@Suite("Fake BAR on /dev/kvm", .enabled(if: KVMAvailability.present, "needs a usable /dev/kvm (kvm module loaded, run as root or in group kvm)"))
struct FakeBARToggleTests {
    static let barSize = 0x10000
    /// The word at `offset` of the fake BAR: differs between neighbours and between pages.
    static func pattern(_ offset: UInt16) -> UInt16 { (offset &* 0x9e37) ^ 0x5a5a }

    /// A second thread deletes and re-adds the BAR slot 10,000 times while the vCPU thread
    /// keeps reading it. Every read must return the pattern; an MMIO exit in a run during which
    /// the slot was present the whole time, or a direct read in one during which it was absent
    /// the whole time, is a failure (runs that overlap a toggle may go either way). The toggler
    /// waits for one such unambiguous run after each toggle, so each state is checked at least
    /// once, and the toggle itself lands while the vCPU is running.
    @Test func concurrentToggleServesEveryReadCorrectly() throws {
        let guest = try RealModeVM(code: GuestCode.readBARForever)
        let bar = try GuestMemory(size: Self.barSize, backing: .shared(name: "fake-bar"))
        var words: [UInt8] = []
        for offset in stride(from: 0, to: Self.barSize, by: 2) {
            let word = Self.pattern(UInt16(offset))
            words += [UInt8(word & 0xff), UInt8(word >> 8)]
        }
        try bar.write(words, at: 0)
        let slot = Memslot(id: MemslotID(slot: 1), guestPhysicalAddress: GuestCode.barGuestPhysicalAddress,
                           size: UInt64(Self.barSize), userspaceAddress: bar.hostAddress, kind: .deviceMemory)
        let toggle = try SlotToggle(vm: guest.vm, slot: slot, backing: bar)
        #expect(guest.vm.memslots[slot.id] == slot)

        let toggles = 10_000
        let shared = ToggleShared()
        let handOver = HandOver(toggle)
        let toggleErrors = Mutex<[String]>([])
        let done = DispatchSemaphore(value: 0)
        let toggler = Thread {
            defer { done.signal() }
            for _ in 0..<toggles {
                while shared.settled.load(ordering: .acquiring) != shared.generation.load(ordering: .acquiring) {
                    if shared.vcpuGone.load(ordering: .acquiring) { return }
                    sched_yield()
                }
                shared.generation.add(1, ordering: .sequentiallyConsistent)
                do { try handOver.value.toggle() } catch {
                    toggleErrors.withLock { $0.append("\(error)") }
                    return
                }
                shared.generation.add(1, ordering: .sequentiallyConsistent)
            }
            while shared.settled.load(ordering: .acquiring) != shared.generation.load(ordering: .acquiring),
                  !shared.vcpuGone.load(ordering: .acquiring) { sched_yield() }
        }

        var offset: UInt16 = 0
        var wrongData = 0, wrongExits = 0, mmioExits = 0
        var mmioWhilePresent = 0, directWhileAbsent = 0, presentChecked = 0, absentChecked = 0, ambiguous = 0
        toggler.start()
        vcpuLoop: while !(shared.settled.load(ordering: .acquiring) == 2 * toggles) && toggleErrors.withLock({ $0.isEmpty }) {
            let before = shared.generation.load(ordering: .sequentiallyConsistent)
            var exit = try guest.vcpu.run()
            var viaMMIO = false
            if case let .mmio(address, false, length, _) = exit {
                mmioExits += 1
                viaMMIO = true
                guard address == GuestCode.barGuestPhysicalAddress + UInt64(offset), length == 2 else {
                    Issue.record("MMIO read of \(length) bytes at 0x\(String(address, radix: 16)), expected BAR offset 0x\(String(offset, radix: 16))")
                    break vcpuLoop
                }
                // Served from the backing itself, as a VFIO region read would be.
                try guest.vcpu.provideInput(try bar.read(at: Int(offset), count: 2))
                exit = try guest.vcpu.run()
            }
            let after = shared.generation.load(ordering: .sequentiallyConsistent)
            guard case let .io(GuestCode.barReportPort, .out, 2, 1, data) = exit else {
                wrongExits += 1
                Issue.record("unexpected exit \(exit)")
                break vcpuLoop
            }
            let expected = Self.pattern(offset)
            if data != [UInt8(expected & 0xff), UInt8(expected >> 8)] { wrongData += 1 }
            if before == after, before % 2 == 0 {
                if (before / 2) % 2 == 0 {
                    presentChecked += 1
                    if viaMMIO { mmioWhilePresent += 1 }
                } else {
                    absentChecked += 1
                    if !viaMMIO { directWhileAbsent += 1 }
                }
                shared.settled.store(before, ordering: .releasing)
            } else {
                ambiguous += 1
            }
            offset &+= GuestCode.barStride
        }
        shared.vcpuGone.store(true, ordering: .releasing)
        done.wait()

        #expect(toggleErrors.withLock { $0 } == [])
        #expect(wrongExits == 0)
        #expect(wrongData == 0, "every read returns the BAR's word")
        #expect(mmioWhilePresent == 0, "no MMIO exit while the slot is present")
        #expect(directWhileAbsent == 0, "no direct read while the slot is absent")
        // One unambiguous run per state at least: the initial one, then after every toggle.
        #expect(presentChecked >= toggles / 2 + 1)
        #expect(absentChecked >= toggles / 2)
        #expect(mmioExits >= toggles / 2)
        #expect(toggle.isPresent, "an even number of toggles")
        #expect(guest.vm.memslots[slot.id] == slot)
        #expect(guest.vm.memslots.count == 2)
        print("fake BAR: \(toggles) toggles, \(mmioExits) MMIO exits, \(presentChecked) present / \(absentChecked) absent unambiguous runs, \(ambiguous) runs across a toggle")
    }

    /// A device-memory slot refuses dirty logging, when added and later; a RAM slot does not.
    @Test func deviceMemoryRefusesDirtyLogging() throws {
        let vm = try KVMSystem().createVM()
        let bar = try GuestMemory(size: 0x4000, backing: .shared(name: "bar"))
        let id = MemslotID(slot: 3)
        #expect(throws: KVMError.memslot(.dirtyLoggingOnDeviceMemory(id))) {
            try vm.addSlot(id, guestPhysicalAddress: 0x100000, memory: bar, flags: .logDirtyPages, kind: .deviceMemory)
        }
        #expect(vm.memslots.isEmpty)
        try vm.addSlot(id, guestPhysicalAddress: 0x100000, memory: bar, kind: .deviceMemory)
        #expect(throws: KVMError.memslot(.dirtyLoggingOnDeviceMemory(id))) { try vm.setFlags(id, .logDirtyPages) }
        #expect(vm.memslots[id]?.flags == [])
        let ram = try GuestMemory(size: 0x4000)
        try vm.addSlot(MemslotID(slot: 4), guestPhysicalAddress: 0x200000, memory: ram, flags: .logDirtyPages)
        #expect(vm.memslots[MemslotID(slot: 4)]?.flags == .logDirtyPages)
    }

    /// A 4 MiB device slot must sit at a gpa congruent to its host address modulo 2 MiB; the
    /// table offers one, and the kernel takes it.
    @Test func deviceSlotGetsACongruentAddress() throws {
        let vm = try KVMSystem().createVM()
        let bar = try GuestMemory(size: 6 << 20, backing: .shared(name: "big-bar"))
        let host = bar.hostAddress
        let required = try #require(HugePages.requiredCongruence(hostAddress: host, size: 4 << 20, pageSizes: HugePages.x86Sizes))
        #expect(required == 1 << 21)
        let gpa = try #require(vm.memslots.freeDeviceAddress(size: 4 << 20, hostAddress: host, in: 0x1_0000_0000..<0x2_0000_0000))
        #expect(HugePages.isCongruent(gpa, host, modulo: 1 << 21))
        let wrong = gpa + 0x1000
        #expect(throws: KVMError.memslot(.hugePageIncongruent(MemslotID(slot: 0), pageSize: 1 << 21, guestPhysicalAddress: wrong,
                                                               hostAddress: host, suggested: gpa + (1 << 21)))) {
            try vm.addSlot(guestPhysicalAddress: wrong, memory: bar, size: 4 << 20, kind: .deviceMemory)
        }
        let slot = try vm.addSlot(guestPhysicalAddress: gpa, memory: bar, size: 4 << 20, kind: .deviceMemory)
        #expect(slot.kind == .deviceMemory)
        #expect(vm.memslots.lookup(guestPhysicalAddress: gpa + 0x3f_ffff)?.id == slot.id)
    }
}
