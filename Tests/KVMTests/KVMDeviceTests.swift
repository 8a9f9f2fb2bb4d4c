import CLinuxUAPI
import SystemPackage
import Testing
@testable import KVM

/// A VM with 64 KiB of RAM at gpa 0 (slot 0) holding `code` at 0000:1000, and a vCPU in real
/// mode about to run it.
struct RealModeVM {
    let vm: VirtualMachine
    let vcpu: VirtualCPU
    let ram: GuestMemory

    init(code: [UInt8], configure: (VirtualMachine) throws -> Void = { _ in }) throws {
        vm = try KVMSystem().createVM()
        try vm.setX86RealModeAreas()
        try configure(vm)
        ram = try GuestMemory(size: 0x10000)
        try ram.write(code, at: Int(GuestCode.loadAddress))
        try vm.addSlot(MemslotID(slot: 0), guestPhysicalAddress: 0, memory: ram)
        vcpu = try vm.createVCPU()
        try vcpu.enterRealMode(offset: GuestCode.loadAddress)
    }

    /// Runs until hlt, calling `onRingFull` on each dirty-ring-full exit and going on past
    /// `out` to the progress port; returns the exits seen.
    func runToHalt(onRingFull: () throws -> Void = {}) throws -> [VMExit] {
        var exits: [VMExit] = []
        for _ in 0..<100_000 {
            let exit = try vcpu.run()
            exits.append(exit)
            switch exit {
            case .halt: return exits
            case .dirtyRingFull: try onRingFull()
            case .io(GuestCode.progressPort, .out, _, _, _): continue
            default: Issue.record("unexpected exit \(exit)"); return exits
            }
        }
        Issue.record("the guest did not halt")
        return exits
    }
}

func kernelErrno(_ body: () throws(KVMError) -> Void) -> Errno? {
    do {
        try body()
        return nil
    } catch let .system(_, errno) {
        return errno
    } catch {
        return nil
    }
}

@Suite("KVM on /dev/kvm", .enabled(if: KVMAvailability.present, "needs a usable /dev/kvm (kvm module loaded, run as root or in group kvm)"))
struct KVMDeviceTests {
    @Test func systemAndVMCapabilities() throws {
        let kvm = try KVMSystem()
        #expect(kvm.apiVersion == KVM_API_VERSION)
        #expect(kvm.vcpuMmapSize >= MemoryLayout<kvm_run>.size)
        let vm = try kvm.createVM()
        #expect(vm.capabilities.maxMemslots > 0)
        #expect(vm.capabilities.maxMemslots == vm.memslots.slotsPerAddressSpace)
        #expect(vm.capabilities.addressSpaces >= 1)
        #expect(try kvm.capability(.nrMemslots) == vm.capabilities.maxMemslots)
    }

    @Test func realModeGuestExitsAreTyped() throws {
        let guest = try RealModeVM(code: GuestCode.exits)
        let vcpu = guest.vcpu
        #expect(try vcpu.run() == .io(port: 0x3f8, direction: .out, size: 1, count: 1, data: [0x42]))
        #expect(try vcpu.run() == .io(port: 0x80, direction: .out, size: 2, count: 1, data: [0x34, 0x12]))
        #expect(try vcpu.run() == .io(port: 0x61, direction: .in, size: 1, count: 1, data: []))
        #expect(throws: KVMError.self) { try vcpu.provideInput([1, 2]) }  // wrong length
        try vcpu.provideInput([0x5a])
        #expect(try vcpu.run() == .io(port: 0x81, direction: .out, size: 1, count: 1, data: [0x5a]))
        #expect(try vcpu.run() == .mmio(address: 0x20010, isWrite: true, length: 1, data: [0x77]))
        #expect(throws: KVMError.self) { try vcpu.provideInput([0]) }  // a write wants no input
        #expect(try vcpu.run() == .mmio(address: 0x20011, isWrite: false, length: 1, data: []))
        try vcpu.provideInput([0x99])
        #expect(try vcpu.run() == .io(port: 0x82, direction: .out, size: 1, count: 1, data: [0x99]))
        #expect(try vcpu.run() == .halt)
        let regs = try vcpu.registers()
        #expect(regs.rip == UInt64(GuestCode.loadAddress) + UInt64(GuestCode.exits.count))
        #expect(try vcpu.specialRegisters().ds.selector == 0x2000)
    }

    /// The kernel's answers to bad regions, asked directly, and the table refusing each first.
    @Test func kernelAndTableAgreeOnBadRegions() throws {
        let vm = try KVMSystem().createVM()
        let memory = try GuestMemory(size: 0x20000)
        let base = memory.hostAddress
        try vm.addSlot(MemslotID(slot: 0), guestPhysicalAddress: 0x100000, memory: memory, size: 0x10000)
        let one = MemslotID(slot: 1)
        let cases: [(Memslot, Errno, MemslotError)] = [
            (Memslot(id: one, guestPhysicalAddress: 0x108000, size: 0x10000, userspaceAddress: base + 0x10000),
             .fileExists, .overlap(one, with: MemslotID(slot: 0), range: 0x108000..<0x118000)),
            (Memslot(id: one, guestPhysicalAddress: 0x200800, size: 0x1000, userspaceAddress: base + 0x10000),
             .invalidArgument, .misaligned(one, field: "guest physical address", value: 0x200800, pageSize: 4096)),
            (Memslot(id: one, guestPhysicalAddress: 0x200000, size: 0x1800, userspaceAddress: base + 0x10000),
             .invalidArgument, .misaligned(one, field: "size", value: 0x1800, pageSize: 4096)),
            (Memslot(id: one, guestPhysicalAddress: 0x200000, size: 0x1000, userspaceAddress: base + 0x10010),
             .invalidArgument, .misaligned(one, field: "host address", value: base + 0x10010, pageSize: 4096)),
            (Memslot(id: MemslotID(slot: 5), guestPhysicalAddress: 0, size: 0, userspaceAddress: 0),
             .invalidArgument, .noSuchSlot(MemslotID(slot: 5))),
            (Memslot(id: MemslotID(slot: 0), guestPhysicalAddress: 0x100000, size: 0x10000, userspaceAddress: base, flags: .readOnly),
             .invalidArgument, .readOnlyChange(MemslotID(slot: 0))),
            (Memslot(id: MemslotID(slot: UInt16(vm.capabilities.maxMemslots)), guestPhysicalAddress: 0x300000, size: 0x1000,
                     userspaceAddress: base + 0x10000),
             .invalidArgument, .slotOutOfRange(MemslotID(slot: UInt16(vm.capabilities.maxMemslots)),
                                               slotsPerAddressSpace: vm.capabilities.maxMemslots,
                                               addressSpaces: vm.capabilities.addressSpaces)),
        ]
        for (region, kernelAnswer, tableAnswer) in cases {
            #expect(kernelErrno { () throws(KVMError) in try vm.rawSetUserMemoryRegion(region) } == kernelAnswer, "kernel on \(region)")
            #expect(throws: KVMError.memslot(tableAnswer), "table on \(region)") {
                try vm.setMemoryRegion(region, backing: memory)
            }
        }
        // None of the refused regions got into the kernel: slot 1 is still free there.
        #expect(vm.memslots.count == 1)
        try vm.addSlot(one, guestPhysicalAddress: 0x200000, memory: memory, offset: 0x10000, size: 0x10000)
        // Moving onto another slot: EEXIST from the kernel, refused by the table.
        var onto = vm.memslots[one]
        onto?.guestPhysicalAddress = 0x10f000
        if let onto {
            #expect(kernelErrno { () throws(KVMError) in try vm.rawSetUserMemoryRegion(onto) } == .fileExists)
        }
        #expect(throws: KVMError.memslot(.overlap(one, with: MemslotID(slot: 0), range: 0x10f000..<0x11f000))) {
            try vm.moveSlot(one, to: 0x10f000)
        }
    }

    /// add, move, flags and delete, each seen by a guest reading the slot.
    @Test func slotChangesAreSeenByTheGuest() throws {
        // mov ax, 0x3000 ; mov ds, ax ; mov al, [0] ; out 0x90, al ; hlt   (reads gpa 0x30000)
        let reader: [UInt8] = [0xb8, 0x00, 0x30, 0x8e, 0xd8, 0xa0, 0x00, 0x00, 0xe6, 0x90, 0xf4]
        let guest = try RealModeVM(code: reader)
        let vm = guest.vm, vcpu = guest.vcpu
        let data = try GuestMemory(size: 0x1000, backing: .shared(name: "fake-bar"))
        try data.write([0xab], at: 0)
        let id = try vm.addSlot(guestPhysicalAddress: 0x40000, memory: data).id
        #expect(id == MemslotID(slot: 1))

        func readAt0x30000() throws -> VMExit {
            try vcpu.enterRealMode(offset: GuestCode.loadAddress)
            var exit = try vcpu.run()
            if case .mmio(_, false, 1, _) = exit {
                try vcpu.provideInput([0xee])  // no slot: the read comes to us
                exit = try vcpu.run()
            }
            #expect(try vcpu.run() == .halt)
            return exit
        }
        #expect(try readAt0x30000() == .io(port: 0x90, direction: .out, size: 1, count: 1, data: [0xee]))
        try vm.moveSlot(id, to: 0x30000)
        #expect(vm.memslots.lookup(guestPhysicalAddress: 0x30000)?.id == id)
        #expect(try readAt0x30000() == .io(port: 0x90, direction: .out, size: 1, count: 1, data: [0xab]))
        try vm.setFlags(id, .logDirtyPages)
        #expect(vm.memslots[id]?.flags == .logDirtyPages)
        #expect(throws: KVMError.memslot(.readOnlyChange(id))) { try vm.setFlags(id, .readOnly) }
        try vm.deleteSlot(id)
        #expect(vm.memslots[id] == nil)
        #expect(try readAt0x30000() == .io(port: 0x90, direction: .out, size: 1, count: 1, data: [0xee]))
        #expect(throws: KVMError.memslot(.noSuchSlot(id))) { try vm.deleteSlot(id) }
    }

    @Test func dirtyRingSizeIsValidated() throws {
        let vm = try KVMSystem().createVM()
        let max = vm.capabilities.dirtyRingAcquireReleaseMaxBytes > 0
            ? vm.capabilities.dirtyRingAcquireReleaseMaxBytes : vm.capabilities.dirtyRingMaxBytes
        try #require(max > 0, "this host has no dirty ring")
        #expect(throws: KVMError.invalidDirtyRingSize(bytes: 12288, reason: "not a power of two")) {
            try vm.enableDirtyRing(bytes: 12288)
        }
        #expect(throws: KVMError.self) { try vm.enableDirtyRing(bytes: 2048) }
        #expect(throws: KVMError.self) { try vm.enableDirtyRing(bytes: max * 2) }
        _ = try vm.createVCPU()
        #expect(throws: KVMError.invalidState("the dirty ring must be enabled before the first vCPU is created")) {
            try vm.enableDirtyRing(bytes: 65536)
        }
    }
}
