import CLinuxUAPI
import SystemPackage
import Testing
@testable import KVM

/// The x86 platform pieces a Linux-booting VMM needs from KVM: the in-kernel PIT and CPUID.
@Suite("x86 platform on /dev/kvm", .enabled(if: KVMAvailability.present, "needs a usable /dev/kvm (kvm module loaded, run as root or in group kvm)"))
struct X86PlatformTests {
    /// xor eax, eax ; cpuid ; mov eax, ebx ; out 0x90, eax ; hlt (real mode, 32-bit operands).
    static let cpuidLeaf0EBX: [UInt8] = [0x66, 0x31, 0xc0, 0x0f, 0xa2, 0x66, 0x89, 0xd8, 0x66, 0xe7, 0x90, 0xf4]

    @Test func supportedCPUIDHasLeafZeroWithAVendor() throws {
        let leaves = try KVMSystem().supportedCPUID()
        let leaf0 = try #require(leaves.first { $0.function == 0 })
        #expect(leaf0.eax >= 1)                                   // at least leaf 1 exists
        #expect(leaves.contains { $0.function == 1 })
        #expect(leaf0.ebx != 0)                                   // the vendor string's first four bytes
    }

    @Test func theGuestSeesTheCPUIDItWasGiven() throws {
        let guest = try RealModeVM(code: Self.cpuidLeaf0EBX)
        var leaves = try guest.vm.system.supportedCPUID()
        let position = try #require(leaves.firstIndex { $0.function == 0 })
        leaves[position].ebx = 0x5346_4956   // "VIFS"
        try guest.vcpu.setCPUID(leaves)
        #expect(try guest.vcpu.run() == .io(port: 0x90, direction: .out, size: 4, count: 1, data: [0x56, 0x49, 0x46, 0x53]))
    }

    @Test func thePITNeedsTheIrqchipAndComesOnce() throws {
        let vm = try KVMSystem().createVM()
        let before = kernelErrno { () throws(KVMError) in try vm.createPIT() }
        #expect(before != nil)                                   // no irqchip yet: refused
        let irqchip = try InterruptController(vm: vm)
        try vm.createPIT()
        #expect(kernelErrno { () throws(KVMError) in try vm.createPIT() } == .fileExists)
        _ = irqchip
    }
}

@Suite("x86 long mode")
struct X86LongModeTests {
    @Test func theGDTHasFlatCodeAndDataWhereTheBootProtocolWantsThem() {
        let gdt = X86LongMode.gdt()
        #expect(gdt.count == 32)
        #expect(gdt[16 + 5] == 0x9b && gdt[16 + 6] == 0xaf)    // present code, L bit, 4 KiB granularity
        #expect(gdt[24 + 5] == 0x93 && gdt[24 + 6] == 0xcf)    // present data, 32-bit, 4 KiB granularity
    }

    @Test func pageTablesMapEachGiBWithTwoMiBPages() throws {
        let tables = try #require(X86LongMode.identityPageTables(at: 0x9000, gigabytes: 2))
        func entry(_ index: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(tables[index * 8 + $1]) << (8 * UInt64($1)) } }
        #expect(tables.count == 4 * 4096)
        #expect(entry(0) == 0xa003)                 // PML4[0] -> PDPT
        #expect(entry(512) == 0xb003 && entry(513) == 0xc003)
        #expect(entry(1024 + 1) == 0x20_0083)       // 2 MiB page 1
        #expect(entry(1536 + 511) == 0x7fe0_0083)   // the last 2 MiB page of the second GiB
        #expect(X86LongMode.identityPageTables(at: 0x9001, gigabytes: 1) == nil)
        #expect(X86LongMode.identityPageTables(at: 0x9000, gigabytes: 0) == nil)
    }
}

@Suite("x86 long mode on /dev/kvm", .enabled(if: KVMAvailability.present, "needs a usable /dev/kvm (kvm module loaded, run as root or in group kvm)"))
struct X86LongModeGuestTests {
    /// mov rax, [0x300000] ; out 0x90, eax ; mov ax, ds ; out 0x91, ax ; hlt
    static let code: [UInt8] = [0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x30, 0x00, 0xe7, 0x90, 0x66, 0x8c, 0xd8, 0x66, 0xe7, 0x91, 0xf4]

    @Test func aSixtyFourBitGuestRunsThroughTheIdentityMap() throws {
        let vm = try KVMSystem().createVM()
        let ram = try GuestMemory(size: 4 << 20)
        try vm.addSlot(MemslotID(slot: 0), guestPhysicalAddress: 0, memory: ram)
        try ram.write(X86LongMode.gdt(), at: 0x500)
        try ram.write(try #require(X86LongMode.identityPageTables(at: 0x9000, gigabytes: 1)), at: 0x9000)
        try ram.write(Self.code, at: 0x10_0000)
        try ram.write([0x78, 0x56, 0x34, 0x12], at: 0x30_0000)
        let vcpu = try vm.createVCPU()
        try vcpu.setCPUID(try vm.system.supportedCPUID())
        try vcpu.enterLongMode(entry: 0x10_0000, pageTableRoot: 0x9000, gdtBase: 0x500)
        #expect(try vcpu.run() == .io(port: 0x90, direction: .out, size: 4, count: 1, data: [0x78, 0x56, 0x34, 0x12]))
        #expect(try vcpu.run() == .io(port: 0x91, direction: .out, size: 2, count: 1, data: [0x18, 0x00]))
    }
}
