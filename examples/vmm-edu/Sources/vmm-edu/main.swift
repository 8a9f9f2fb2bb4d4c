// vmm-edu: QEMU's edu device assigned to a tiny KVM guest the way a VMM does it, with vfioctl's
// public library products only. One PassthroughVM owns the VFIO container; edu's BAR0 is a
// memslot (the guest programs the device directly, no exit); guest RAM is DMA-mapped at
// IOVA = gpa; edu's MSI goes through an eventfd and KVM_IRQFD to an MSI route, and the guest's
// own interrupt handler counts it. The guest raises RAISES interrupts through edu's register,
// then has edu DMA a pattern from its RAM into the device and back into another place of its
// RAM, each transfer ending with an interrupt; it reports the count with one `out`. With --intx
// edu's INTx line goes instead through an irqfd with a resample eventfd to an IOAPIC pin that
// the guest programs level-triggered; its EOI unmasks the line in VFIO, all in the kernel.
//
//   vmm-edu 0000:00:02.0 [RAISES] [--intx]
#if canImport(Glibc)
import Glibc
#endif
import KVM
import PCIInventory
import Passthrough
import VFIO

/// The guest: 16-bit real mode, assembled from guest.s (GNU as, checked with `objdump -d
/// -Mi8086`). DS is based at the local APIC, ES at 0 (RAM), FS at edu's BAR0, GS at the IOAPIC,
/// whose redirection entry for `pin` it points at the vector, level-triggered (used for INTx).
enum Guest {
    static let codeAddress: UInt16 = 0x1000
    static let handlerAddress: UInt16 = 0x1100
    static let stackTop: UInt16 = 0x8000
    /// RAM the guest and this program share: the handler's count, then the parameters.
    static let counter = 0x3000
    static let raises = 0x3010
    static let destination = 0x3014
    static let source = 0x3018
    static let count = 0x301c
    static let pin = 0x3020
    /// The IOAPIC pin INTx is routed to: 16 and up are the IOAPIC's alone (no PIC behind them).
    static let intxPin: UInt32 = 16
    static let ioapicBase: UInt64 = 0xfec0_0000
    static let reportPort: UInt16 = 0x90
    static let vector: UInt8 = 0x40

    static let main: [UInt8] = [
        0x66, 0xc7, 0x06, 0xf0, 0x00, 0xff, 0x01, 0x00, 0x00, 0x26, 0x66, 0xa1,
        0x20, 0x30, 0x66, 0xd1, 0xe0, 0x66, 0x83, 0xc0, 0x10, 0x65, 0x66, 0xa3,
        0x00, 0x00, 0x65, 0x66, 0xc7, 0x06, 0x10, 0x00, 0x40, 0x80, 0x00, 0x00,
        0x66, 0x40, 0x65, 0x66, 0xa3, 0x00, 0x00, 0x65, 0x66, 0xc7, 0x06, 0x10,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x66, 0x31, 0xf6, 0x26, 0x66, 0x3b, 0x36,
        0x10, 0x30, 0x73, 0x11, 0x64, 0x66, 0xc7, 0x06, 0x60, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x66, 0x46, 0xe8, 0x65, 0x00, 0xeb, 0xe7, 0x26, 0x66, 0xa1,
        0x18, 0x30, 0x64, 0x66, 0xa3, 0x80, 0x00, 0x64, 0x66, 0xc7, 0x06, 0x88,
        0x00, 0x00, 0x00, 0x04, 0x00, 0x26, 0x66, 0xa1, 0x1c, 0x30, 0x64, 0x66,
        0xa3, 0x90, 0x00, 0x64, 0x66, 0xc7, 0x06, 0x98, 0x00, 0x05, 0x00, 0x00,
        0x00, 0x66, 0x46, 0xe8, 0x36, 0x00, 0x64, 0x66, 0xc7, 0x06, 0x80, 0x00,
        0x00, 0x00, 0x04, 0x00, 0x26, 0x66, 0xa1, 0x14, 0x30, 0x64, 0x66, 0xa3,
        0x88, 0x00, 0x26, 0x66, 0xa1, 0x1c, 0x30, 0x64, 0x66, 0xa3, 0x90, 0x00,
        0x64, 0x66, 0xc7, 0x06, 0x98, 0x00, 0x07, 0x00, 0x00, 0x00, 0x66, 0x46,
        0xe8, 0x09, 0x00, 0x26, 0x66, 0xa1, 0x00, 0x30, 0x66, 0xe7, 0x90, 0xf4,
        0xfa, 0x26, 0x66, 0xa1, 0x00, 0x30, 0x66, 0x39, 0xf0, 0x73, 0x04, 0xfb,
        0xf4, 0xeb, 0xf1, 0xfb, 0xc3,
    ]
    /// The MSI handler: acknowledge edu (status -> ack register), count, EOI, iret.
    static let handler: [UInt8] = [
        0x66, 0x50, 0x64, 0x66, 0xa1, 0x24, 0x00, 0x64, 0x66, 0xa3, 0x64, 0x00,
        0x26, 0x66, 0xff, 0x06, 0x00, 0x30, 0x66, 0xc7, 0x06, 0xb0, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x66, 0x58, 0xcf,
    ]
}

func fail(_ message: String) -> Never {
    print("vmm-edu: \(message)")
    exit(1)
}

let intx = CommandLine.arguments.contains("--intx")
let arguments = CommandLine.arguments.filter { $0 != "--intx" }
guard arguments.count >= 2, arguments.count <= 3 else { fail("usage: vmm-edu BDF [RAISES] [--intx]") }
let raises = arguments.count == 3 ? UInt32(arguments[2]) ?? 0 : 10
guard raises > 0, raises <= 10_000 else { fail("RAISES must be 1...10000") }
// A guest whose interrupts never come sleeps in hlt for ever: stop the whole run instead.
alarm(60)

do {
    let address = try PCIAddress(parsing: arguments[1])
    let vm = try KVMSystem().createVM()
    try vm.setX86RealModeAreas()
    // One object for the VM's passthrough: DMA space, irqchip, KVM-VFIO device. The backend is
    // whatever the host offers for edu (iommufd where /dev/iommu and edu's device file exist);
    // nothing below depends on which.
    let backend = try VFIOBackendRequest.auto.resolve(VFIOBackendFacts.read(address), device: address)
    let passthrough = try PassthroughVM(vm: vm, backend: backend)
    let edu = try passthrough.addDevice(address)

    // 2 MiB of RAM at gpa 0, a memslot and DMA-mapped at IOVA = gpa (edu reaches 28 bits).
    let ram = try GuestMemory(size: 2 << 20)
    try vm.addSlot(MemslotID(slot: 0), guestPhysicalAddress: 0, memory: ram)
    try passthrough.mapGuestRAM(ram, guestPhysicalAddress: 0, deviceAddressBits: 28)

    // edu's BARs as memslots, placed above RAM and below the APIC window.
    let bars = try edu.addBARMemslots(window: 0x1000_0000..<0xfec0_0000)
    guard let bar0 = bars.guestPhysicalAddress(bar: 0, offset: 0) else { fail("edu's BAR0 was not placed") }
    try edu.device.updateCommand(set: PCICommand.memorySpace | PCICommand.busMaster, clear: intx ? PCICommand.intxDisable : 0)
    let route: String
    if intx {
        // INTx: trigger eventfd -> irqfd on the IOAPIC pin; the guest's EOI -> resample eventfd -> VFIO unmask.
        try edu.routeINTx(gsi: Guest.intxPin)
        route = "INTx -> irqfd with resample -> IOAPIC pin \(Guest.intxPin)"
    } else {
        // edu's one MSI vector, into the guest as `vector` on the boot CPU.
        let gsis = try edu.routeMSI(index: PCIIRQ.msi, messages: [.x86(vector: Guest.vector)])
        route = "MSI -> irqfd -> GSI \(gsis.map(String.init).joined(separator: ","))"
    }

    let pattern: [UInt8] = (0..<1024).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
    let source = 0x18_0000, destination = 0x10_0000
    func le(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * UInt32($0))) } }
    try ram.write(Guest.main, at: Int(Guest.codeAddress))
    try ram.write(Guest.handler, at: Int(Guest.handlerAddress))
    // Real-mode interrupt table: vector -> 0000:handler.
    try ram.write(le(UInt32(Guest.handlerAddress)), at: Int(Guest.vector) * 4)
    try ram.write(le(raises) + le(UInt32(destination)) + le(UInt32(source)) + le(UInt32(pattern.count)) + le(Guest.intxPin), at: Guest.raises)
    try ram.write(pattern, at: source)

    let vcpu = try vm.createVCPU()
    try vcpu.enterRealMode(offset: Guest.codeAddress, stackPointer: Guest.stackTop)
    try vcpu.setSegmentBase(.ds, UInt64(MSIMessage.x86AddressBase))
    try vcpu.setSegmentBase(.fs, bar0)
    try vcpu.setSegmentBase(.gs, Guest.ioapicBase)
    try vcpu.enableLocalAPIC()

    print("edu \(address): BAR0 at gpa 0x\(String(bar0, radix: 16)) (\(bars.toggles.count) memslot(s)), RAM DMA-mapped at IOVA = gpa, \(route) -> vector 0x\(String(Guest.vector, radix: 16))")
    let clock = ContinuousClock()
    let start = clock.now
    var exits: [VMExit] = []
    var reported: UInt32?
    while reported == nil {
        let exit = try vcpu.run()
        exits.append(exit)
        switch exit {
        case let .io(Guest.reportPort, .out, 4, 1, data):
            reported = data.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
        case .interrupted:
            continue
        case .mmio:
            // Not expected (BAR0 is a memslot): served by VFIO region access if it happens.
            guard try bars.serve(exit, on: vcpu) else { fail("unexpected exit \(exit)") }
        default:
            fail("unexpected exit \(exit)")
        }
    }
    let elapsed = clock.now - start
    let expected = raises + 2
    let landed = try ram.read(at: destination, count: pattern.count) == pattern
    let counted = try ram.read(at: Guest.counter, count: 4).enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
    print("interrupts counted by the guest's handler: \(counted) (\(raises) raised + 2 DMA completions), reported \(reported ?? 0)")
    print("exits to userspace: \(exits.count) (\(exits.filter { if case .mmio = $0 { return true }; return false }.count) MMIO), in \(elapsed)")
    print("DMA: \(pattern.count) bytes RAM -> edu -> RAM at gpa 0x\(String(destination, radix: 16)): \(landed ? "match" : "DIFFER")")
    try edu.unrouteInterrupts()
    let ok = counted == expected && reported == expected && landed && exits.count == 1
    print(ok ? "ok: edu's interrupts reached the guest's handler through irqfd, with one exit for the whole run" : "FAILED")
    exit(ok ? 0 : 1)
} catch {
    fail("\(error)")
}
