import CLinuxUAPI
import KVM
import Passthrough

/// Guest code for the passthrough probes, as machine code with the assembly it came from (GNU
/// as `--32`, checked with `objdump -d`).
public enum ProbePrograms {
    /// 32-bit flat protected mode, paging off (gpa = address). Reads one dword from each
    /// address in a table and reports it with `out 0x90, eax`, then halts. Registers: esi = the
    /// table (dwords, guest-physical addresses), ecx = how many. It ends with `out 0x91, al`
    /// before its `hlt`: with an in-kernel irqchip (`PassthroughVM`) KVM keeps a halted vCPU in
    /// the kernel, so the halt alone would never come back to userspace.
    ///   next: test ecx, ecx ; jz done
    ///         mov ebx, [esi] ; mov eax, [ebx] ; out 0x90, eax
    ///         add esi, 4 ; dec ecx ; jmp next
    ///   done: out 0x91, al ; hlt
    public static let readTable32: [UInt8] = [
        0x85, 0xc9,        // 00 next: test %ecx,%ecx
        0x74, 0x0c,        // 02       je 10 <done>
        0x8b, 0x1e,        // 04       mov (%esi),%ebx
        0x8b, 0x03,        // 06       mov (%ebx),%eax      <- the BAR (or RAM) read
        0xe7, 0x90,        // 08       out %eax,$0x90
        0x83, 0xc6, 0x04,  // 0a       add $0x4,%esi
        0x49,              // 0d       dec %ecx
        0xeb, 0xf0,        // 0e       jmp 0 <next>
        0xe6, 0x91,        // 10 done: out %al,$0x91
        0xf4,              // 12       hlt
    ]
    /// The port each read's dword is reported on.
    public static let reportPort: UInt16 = 0x90
    /// The port the guest writes once every read is reported.
    public static let donePort: UInt16 = 0x91
}

/// What one run of the probe guest saw.
public struct ProbeRun: Sendable, Equatable {
    /// The dwords the guest reported, in table order.
    public var values: [UInt32]
    /// MMIO exits (each served by the BARs' region access) and port I/O exits (each report).
    public var mmioExits: Int
    public var ioExits: Int
    /// From the first KVM_RUN to the halt, exits served included.
    public var nanoseconds: UInt64
    /// The reads (table indices) that exited to userspace as MMIO and were served there.
    public var readsServedByExit: [Int] = []
}

/// A tiny VM for probing passthrough: `ramSize` bytes of RAM at gpa 0 (slot 0) holding
/// `ProbePrograms.readTable32` at `codeAddress` and its table at `tableAddress`, one vCPU in
/// flat protected mode. Addresses must be below 4 GiB (the guest has no paging).
public final class ProbeGuest {
    public static let ramSize = 2 << 20
    public static let codeAddress: UInt32 = 0x1000
    public static let tableAddress: UInt32 = 0x2000
    /// Room for the table: up to the first 64 KiB of RAM.
    public static let maxReads = (0x10000 - Int(tableAddress)) / 4
    public static let ramSlot = MemslotID(slot: 0)

    public let vm: VirtualMachine
    public let vcpu: VirtualCPU
    public let ram: GuestMemory

    /// A new VM of `system` (no in-kernel irqchip), with RAM and the vCPU.
    public convenience init(system: KVMSystem) throws(PassthroughError) {
        let vm = try viaKVM { () throws(KVMError) in
            let vm = try system.createVM()
            try vm.setX86RealModeAreas()
            return vm
        }
        try self.init(vm: vm)
    }

    /// RAM (slot 0) and the vCPU in `vm`, whose x86 real-mode areas are set. To pass devices
    /// through, create the `PassthroughVM` first: its irqchip must precede the vCPU.
    public init(vm: VirtualMachine) throws(PassthroughError) {
        (self.vm, vcpu, ram) = try viaKVM { () throws(KVMError) in
            let ram = try GuestMemory(size: Self.ramSize)
            try ram.write(ProbePrograms.readTable32, at: Int(Self.codeAddress))
            try vm.addSlot(Self.ramSlot, guestPhysicalAddress: 0, memory: ram)
            return (vm, try vm.createVCPU(), ram)
        }
    }

    /// The guest-physical range RAM occupies (for placing BARs clear of it).
    public var ramRange: Range<UInt64> { 0..<UInt64(ram.size) }

    /// Runs the guest once over `addresses` (each read as one dword), from a fresh entry. MMIO
    /// exits go to `memslots.serve`; any other exit than a report or the final halt is an error.
    /// `afterRead` runs on each report, while the guest is stopped between two of its reads
    /// (it may add or delete memslots: the guest goes on where it was, under the new map).
    public func readDwords(at addresses: [UInt32], memslots: BARMemslots? = nil,
                           afterRead: ((_ read: Int) throws(PassthroughError) -> Void)? = nil) throws(PassthroughError) -> ProbeRun {
        guard addresses.count <= Self.maxReads else {
            throw .unexpectedGuestExit("the probe reads at most \(Self.maxReads) addresses, not \(addresses.count)")
        }
        var table: [UInt8] = []
        for address in addresses { table += (0..<4).map { UInt8(truncatingIfNeeded: address >> (8 * UInt32($0))) } }
        try viaKVM { () throws(KVMError) in
            try ram.write(table, at: Int(Self.tableAddress))
            var regs = kvm_regs()
            regs.rsi = UInt64(Self.tableAddress)
            regs.rcx = UInt64(addresses.count)
            try vcpu.enterFlatProtectedMode(entry: Self.codeAddress, registers: regs)
        }
        var run = ProbeRun(values: [], mmioExits: 0, ioExits: 0, nanoseconds: 0)
        let clock = ContinuousClock()
        let start = clock.now
        // Each read is at most two exits (MMIO, report); the bound only stops a runaway guest.
        for _ in 0..<(addresses.count * 2 + 8) {
            let exit = try viaKVM { () throws(KVMError) in try vcpu.run() }
            switch exit {
            case .halt, .io(ProbePrograms.donePort, .out, 1, 1, _):
                let elapsed = clock.now - start
                run.nanoseconds = UInt64(elapsed.components.seconds) * 1_000_000_000 + UInt64(elapsed.components.attoseconds / 1_000_000_000)
                guard run.values.count == addresses.count else {
                    throw .unexpectedGuestExit("the guest halted after \(run.values.count) of \(addresses.count) reads")
                }
                return run
            case let .io(ProbePrograms.reportPort, .out, 4, 1, data):
                run.ioExits += 1
                run.values.append(data.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) })
                try afterRead?(run.values.count - 1)
            case .mmio:
                run.mmioExits += 1
                run.readsServedByExit.append(run.values.count)
                guard let memslots, try memslots.serve(exit, on: vcpu) else {
                    throw .unexpectedGuestExit("unexpected guest exit \(exit): nothing serves it")
                }
            case .interrupted:
                continue
            default:
                throw .unexpectedGuestExit("unexpected guest exit \(exit)")
            }
        }
        throw .unexpectedGuestExit("the guest did not halt after \(addresses.count) reads")
    }
}
