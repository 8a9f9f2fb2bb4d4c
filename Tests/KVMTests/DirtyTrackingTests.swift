import CLinuxUAPI
import TestKit
import Testing
@testable import KVM

/// Dirty tracking on /dev/kvm: a real-mode guest writes a chosen set of pages of slot 1
/// (gpa 0x10000..<0xf0000, 224 pages); every mode must report exactly that set.
@Suite("Dirty tracking on /dev/kvm", .enabled(if: KVMAvailability.present, "needs a usable /dev/kvm (kvm module loaded, run as root or in group kvm)"))
struct DirtyTrackingTests {
    static let slotBase: UInt64 = 0x10000
    static let slotPages = 224
    static let chosen: [UInt64] = [0, 1, 3, 7, 63, 64, 65, 100, 127, 128, 200, 223]

    /// A guest writing `pages` (indexes into slot 1), with dirty logging on slot 1.
    static func guest(writing pages: [UInt64], exitAfterEach: Bool = false,
                      configure: (VirtualMachine) throws -> Void) throws -> (RealModeVM, MemslotID) {
        let code = GuestCode.writePages(pages.map { slotBase + $0 * 4096 }, exitAfterEach: exitAfterEach)
        let guest = try RealModeVM(code: code, configure: configure)
        let memory = try GuestMemory(size: slotPages * 4096)
        let slot = try guest.vm.addSlot(MemslotID(slot: 1), guestPhysicalAddress: slotBase, memory: memory, flags: .logDirtyPages)
        return (guest, slot.id)
    }

    @Test(arguments: [false, true])
    func bitmapReportsExactlyTheWrittenPages(manualProtect: Bool) throws {
        let (guest, slot) = try Self.guest(writing: Self.chosen) { vm in
            if manualProtect { try vm.enableManualDirtyLogProtect() }
        }
        #expect(guest.vm.dirtyTracking == .bitmap(manualProtect: manualProtect))
        #expect(try guest.runToHalt() == [.halt])
        #expect(try guest.vm.collectDirtyPages().pages == [slot: Self.chosen])
        // Collected pages are clean again (re-protected by GET or by CLEAR)...
        #expect(try guest.vm.collectDirtyPages().pages == [:])
        // ...and a second pass is seen again.
        try guest.vcpu.enterRealMode(offset: GuestCode.loadAddress)
        #expect(try guest.runToHalt() == [.halt])
        #expect(try guest.vm.collectDirtyPages().pages == [slot: Self.chosen])
    }

    @Test func ringReportsExactlyTheWrittenPages() throws {
        let (guest, slot) = try Self.guest(writing: Self.chosen) { vm in try vm.enableDirtyRing(bytes: 65536) }
        #expect(try guest.runToHalt() == [.halt])
        let dirty = try guest.vm.collectDirtyPages()
        #expect(dirty.pages == [slot: Self.chosen])
        #expect(dirty.ringEntries == Self.chosen.count)
        #expect(dirty.ringEntriesReset == Self.chosen.count)
        #expect(try guest.vm.collectDirtyPages() == DirtyPages())
        // The ring is the only log now: KVM_GET_DIRTY_LOG is refused by the kernel.
        #expect(throws: KVMError.self) {
            var log = kvm_dirty_log()
            log.slot = slot.kernelValue
            try ioctlStruct(guest.vm.fd, CKVM_GET_DIRTY_LOG, &log, "KVM_GET_DIRTY_LOG")
        }
    }

    /// The smallest ring the kernel accepts (KVM refuses rings too small for the entries it
    /// reserves, e.g. a 4 KiB ring on Intel with PML), a pass writing as many pages as the ring
    /// has entries (more than its soft limit), three passes: entries wrap around the ring, the
    /// vCPU exits with KVM_EXIT_DIRTY_RING_FULL, and collecting then resuming loses nothing and
    /// reports nothing twice. KVM checks for a full ring only when it enters the guest (on this
    /// host, a run of emulated code filled it completely and then overwrote entries, with a
    /// kernel warning), so the guest exits to us after each page.
    @Test func ringWrapsAroundAndRingFullExitsAreHandled() throws {
        let vm = try KVMSystem().createVM()
        try vm.setX86RealModeAreas()
        let ringBytes = try vm.enableSmallestDirtyRing()
        #expect(ringBytes >= 4096 && ringBytes & (ringBytes - 1) == 0)
        #expect(vm.dirtyTracking == .ring(bytes: ringBytes, acquireRelease: vm.capabilities.dirtyRingAcquireReleaseMaxBytes > 0))
        let ringEntries = ringBytes / MemoryLayout<kvm_dirty_gfn>.stride
        let pages = (0..<UInt64(ringEntries)).map { $0 }
        let dataBase: UInt32 = 0x10_0000

        let low = try GuestMemory(size: 0x10_0000)
        try low.write(GuestPrograms.pageWriter32, at: Int(GuestPrograms.pageWriterEntry))
        try vm.addSlot(MemslotID(slot: 0), guestPhysicalAddress: 0, memory: low)
        let data = try GuestMemory(size: ringEntries * 4096)
        let slot = try vm.addSlot(MemslotID(slot: 1), guestPhysicalAddress: UInt64(dataBase), memory: data, flags: .logDirtyPages).id
        let vcpu = try vm.createVCPU()
        try vcpu.enterFlatProtectedMode(entry: GuestPrograms.pageWriterEntry, registers: GuestPrograms.pageWriterRegisters(
            first: dataBase, pages: UInt32(ringEntries), stride: 4096, pagesPerChunk: 1))

        var totalEntries = 0
        var ringFullExits = 0
        for pass in 0..<3 {
            var seen: [UInt64] = []
            var entries = 0
            func collect() throws {
                let dirty = try vm.collectDirtyPages()
                #expect(dirty.ringEntriesReset == dirty.ringEntries)
                seen += dirty.pages[slot] ?? []
                entries += dirty.ringEntries
            }
            passLoop: for _ in 0..<(4 * ringEntries) {
                let exit = try vcpu.run()
                switch exit {
                case .io(GuestPrograms.chunkDonePort, .out, _, _, _): continue
                case .io(GuestPrograms.roundDonePort, .out, _, _, _): break passLoop
                case .dirtyRingFull:
                    ringFullExits += 1
                    try collect()
                default:
                    Issue.record("unexpected exit \(exit)")
                    return
                }
            }
            try collect()
            #expect(seen.sorted() == pages, "pass \(pass)")
            #expect(entries == pages.count, "pass \(pass): each page once")
            totalEntries += entries
        }
        #expect(totalEntries > ringEntries, "the ring wrapped")
        #expect(ringFullExits >= 3, "each pass overflows the ring's soft limit")
        #expect(throws: KVMError.self) { try vm.enableSmallestDirtyRing() }
    }
}
