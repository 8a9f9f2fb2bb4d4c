#if canImport(Glibc)
import Glibc
#endif
import CLinuxUAPI
import Foundation
import KVM

/// A guest that counts interrupts in its own handlers: real mode (whose `iret` every KVM
/// emulates, where an MMIO exit may make it emulate the handler's tail), its local APIC enabled
/// and reached through DS, whose base is set to the APIC's (the guest never reloads DS), RAM
/// through ES (base 0). Two vectors each have a handler, found through the real-mode interrupt
/// table at 0, that increments a counter in RAM and sends EOI. The guest sleeps in `hlt`
/// (which an in-kernel irqchip handles without leaving the kernel) until both counters add up
/// to edi, then reports the sum with `out 0x90, eax`: one exit to userspace for the whole run,
/// however many interrupts came. Machine code from GNU as `.code16`, checked with `objdump -d`.
public final class InterruptGuest {
    public static let codeAddress: UInt16 = 0x1000
    public static let counterAddresses: [Int] = [0x3000, 0x3004]
    public static let stackTop: UInt16 = 0x8000
    public static let reportPort: UInt16 = 0x90
    /// Set to 1 by the guest once its APIC takes interrupts (a software-disabled APIC drops
    /// them, so nothing may be signalled before).
    public static let readyAddress = 0x3008

    /// main: SVR = 0x1ff (APIC on); [0x3008] = 1; wait: cli; eax = [0x3000] + [0x3004];
    /// if eax >= edi goto done; sti; hlt; jmp wait. done: out 0x90, eax; hlt.
    static let main: [UInt8] = [
        0x66, 0xc7, 0x06, 0xf0, 0x00, 0xff, 0x01, 0x00, 0x00,        // 00 movl $0x1ff,%ds:0xf0
        0x26, 0x66, 0xc7, 0x06, 0x08, 0x30, 0x01, 0x00, 0x00, 0x00,  // 09 movl $0x1,%es:0x3008
        0xfa,                                                        // 13 wait: cli
        0x26, 0x66, 0xa1, 0x00, 0x30,                                // 14 mov %es:0x3000,%eax
        0x26, 0x66, 0x03, 0x06, 0x04, 0x30,                          // 19 add %es:0x3004,%eax
        0x66, 0x39, 0xf8,                                            // 1f cmp %edi,%eax
        0x73, 0x04,                                                  // 22 jae 28 <done>
        0xfb,                                                        // 24 sti
        0xf4,                                                        // 25 hlt
        0xeb, 0xeb,                                                  // 26 jmp 13 <wait>
        0x66, 0xe7, 0x90,                                            // 28 done: out %eax,$0x90
        0xf4,                                                        // 2b hlt
    ]
    /// handler n (at 0x1100 + 0x20 n): incl %es:counter n; movl $0,%ds:0xb0 (EOI); iret.
    static func handler(counter: Int) -> [UInt8] {
        [0x26, 0x66, 0xff, 0x06, UInt8(counter & 0xff), UInt8(counter >> 8 & 0xff),  // incl %es:counter
         0x66, 0xc7, 0x06, 0xb0, 0x00, 0x00, 0x00, 0x00, 0x00,                       // movl $0,%ds:0xb0
         0xcf]                                                                       // iret
    }
    static func handlerAddress(_ index: Int) -> UInt16 { codeAddress + 0x100 + UInt16(index) * 0x20 }

    public let vm: VirtualMachine
    public let interrupts: InterruptController
    public let vcpu: VirtualCPU
    public let ram: GuestMemory
    public let vectors: [UInt8]

    /// A VM with an in-kernel irqchip and 64 KiB of RAM at gpa 0; vectors[0] and vectors[1]
    /// count into counters 0 and 1.
    public init(system: KVMSystem, vectors: [UInt8] = [0x40, 0x41]) throws {
        precondition(vectors.count == 2)
        vm = try system.createVM()
        try vm.setX86RealModeAreas()
        interrupts = try InterruptController(vm: vm)
        ram = try GuestMemory(size: 0x10000)
        try ram.write(Self.main, at: Int(Self.codeAddress))
        for (index, vector) in vectors.enumerated() {
            try ram.write(Self.handler(counter: Self.counterAddresses[index]), at: Int(Self.handlerAddress(index)))
            // Real-mode interrupt table entry: offset, then segment 0.
            let address = Self.handlerAddress(index)
            try ram.write([UInt8(address & 0xff), UInt8(address >> 8), 0, 0], at: Int(vector) * 4)
        }
        try vm.addSlot(MemslotID(slot: 0), guestPhysicalAddress: 0, memory: ram)
        vcpu = try vm.createVCPU()
        self.vectors = vectors
    }

    /// The counters the handlers keep, and the ready flag last.
    public func counts() throws -> [UInt32] {
        try (Self.counterAddresses + [Self.readyAddress]).map { address in
            try ram.read(at: address, count: 4).enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
        }
    }

    /// What one run saw: the sum the guest reported and every exit to userspace.
    public struct Run: Sendable {
        public var reported: UInt32?
        public var exits: [VMExit]
    }

    /// Starts the guest on its own thread, waiting for `total` interrupts; `finish()` joins it.
    public func start(total: UInt32) throws -> Runner {
        try vcpu.enterRealMode(offset: Self.codeAddress, stackPointer: Self.stackTop)
        var regs = try vcpu.registers()
        regs.rdi = UInt64(total)
        try vcpu.setRegisters(regs)
        try vcpu.setSegmentBase(.ds, UInt64(MSIMessage.x86AddressBase))
        try vcpu.enableLocalAPIC()
        let runner = Runner(vcpu: vcpu)
        guard try waitForCounts({ $0[2] == 1 })[2] == 1 else { throw KVMError.invalidState("the interrupt guest did not get ready") }
        return runner
    }

    /// The vCPU's thread: runs until the report (or anything else but EINTR).
    public final class Runner: @unchecked Sendable {
        private let done = DispatchSemaphore(value: 0)
        private var result: Result<Run, Error> = .success(Run(reported: nil, exits: []))
        private let vcpu: VirtualCPU

        init(vcpu: VirtualCPU) {
            self.vcpu = vcpu
            let thread = Thread { [self] in
                var run = Run(reported: nil, exits: [])
                do {
                    while true {
                        let exit = try self.vcpu.run()
                        run.exits.append(exit)
                        if case let .io(InterruptGuest.reportPort, .out, 4, 1, data) = exit {
                            run.reported = data.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
                            break
                        }
                        if case .interrupted = exit { continue }
                        break
                    }
                    result = .success(run)
                } catch {
                    result = .failure(error)
                }
                done.signal()
            }
            thread.start()
        }

        /// Waits for the vCPU thread; nil when it is still running after `seconds`.
        public func finish(seconds: Double) throws -> Run? {
            guard done.wait(timeout: .now() + seconds) == .success else { return nil }
            return try result.get()
        }
    }

    /// Polls the counters until `condition` holds or `seconds` pass.
    public func waitForCounts(seconds: Double = 5, _ condition: ([UInt32]) -> Bool) throws -> [UInt32] {
        let deadline = Date().addingTimeInterval(seconds)
        var current = try counts()
        while !condition(current), Date() < deadline {
            usleep(200)
            current = try counts()
        }
        return current
    }
}
