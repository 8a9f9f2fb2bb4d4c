import CLinuxUAPI
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

    /// A small ring, more pages per pass than its soft limit, several passes: entries wrap around
    /// the ring, the vCPU exits with KVM_EXIT_DIRTY_RING_FULL, and collecting then resuming loses
    /// nothing and reports nothing twice. KVM checks for a full ring only when it enters the
    /// guest (on this host, a run of emulated real-mode code filled it past the soft limit without
    /// an exit), so the guest exits to us after each page.
    @Test func ringWrapsAroundAndRingFullExitsAreHandled() throws {
        let ringBytes = 4096
        let pages = (0..<UInt64(200)).map { $0 }
        let (guest, slot) = try Self.guest(writing: pages, exitAfterEach: true) { vm in
            try vm.enableDirtyRing(bytes: ringBytes)
        }
        let ringEntries = ringBytes / MemoryLayout<kvm_dirty_gfn>.stride
        var totalEntries = 0
        var ringFullExits = 0
        for pass in 0..<3 {
            try guest.vcpu.enterRealMode(offset: GuestCode.loadAddress)
            var seen: [UInt64] = []
            var entries = 0
            let exits = try guest.runToHalt {
                let dirty = try guest.vm.collectDirtyPages()
                #expect(dirty.ringEntriesReset == dirty.ringEntries)
                seen += dirty.pages[slot] ?? []
                entries += dirty.ringEntries
            }
            ringFullExits += exits.filter { $0 == .dirtyRingFull }.count
            let last = try guest.vm.collectDirtyPages()
            seen += last.pages[slot] ?? []
            entries += last.ringEntries
            #expect(seen.sorted() == pages, "pass \(pass)")
            #expect(entries == pages.count, "pass \(pass): each page once")
            totalEntries += entries
        }
        #expect(totalEntries > ringEntries, "the ring wrapped")
        #expect(ringFullExits >= 3, "each pass overflows the ring's soft limit")
    }
}
