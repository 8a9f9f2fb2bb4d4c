#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import SystemCalls
import SystemPackage

/// Direction of a port I/O exit.
public enum IODirection: Sendable, Equatable { case `in`, out }

/// Why KVM_RUN returned, decoded from kvm_run.
public enum VMExit: Sendable, Equatable {
    /// `in`/`out`: for `.out`, `data` is what the guest wrote (size * count bytes); for `.in` it
    /// is empty and the guest gets what `VirtualCPU.provideInput` supplies before the next run.
    case io(port: UInt16, direction: IODirection, size: Int, count: Int, data: [UInt8])
    /// An access to guest-physical memory with no slot (or a write to a read-only slot): for a
    /// write `data` is the bytes written; for a read it is empty and `length` bytes are expected
    /// from `provideInput`.
    case mmio(address: UInt64, isWrite: Bool, length: Int, data: [UInt8])
    /// The guest executed `hlt` (with no in-kernel irqchip).
    case halt
    /// The vCPU's dirty ring is (soft) full: collect dirty pages, then run again.
    case dirtyRingFull
    /// VM entry failed; `reason` is the hardware's (hardware_entry_failure_reason).
    case failEntry(reason: UInt64)
    /// KVM could not emulate something; `suberror` is a KVM_INTERNAL_ERROR_* value and `data` the
    /// words KVM adds (for an emulation failure: the exit reason, its qualifications, the GPA).
    case internalError(suberror: UInt32, data: [UInt64])
    /// Triple fault or similar: the guest would reset.
    case shutdown
    /// KVM_RUN returned EINTR (a signal, or immediate_exit): nothing happened in the guest.
    case interrupted
    /// Any other KVM_EXIT_* value.
    case other(reason: UInt32)
}

/// A vCPU: its descriptor and its kvm_run area, both released exactly once in deinit.
/// Not thread-safe: run it from one thread at a time.
public final class VirtualCPU {
    let owned: OwnedFileDescriptor
    var fd: FileDescriptor { owned.borrowed }
    /// The vCPU id given to KVM_CREATE_VCPU.
    public let id: UInt32
    /// The VM stays alive while any vCPU does.
    public let vm: VirtualMachine
    private let runArea: MemoryMapping
    /// Where the data for the guest's pending `in` or MMIO read go, and how many bytes.
    private enum PendingInput {
        /// `in`: at this offset in the vCPU mapping (kvm_run.io.data_offset).
        case io(offset: Int, length: Int)
        /// MMIO read: into kvm_run.mmio.data.
        case mmio(length: Int)
    }
    private var pendingInput: PendingInput?

    /// Takes ownership of `fd` (which closes if a mapping fails).
    init(fd owned: consuming OwnedFileDescriptor, id: UInt32, vm: VirtualMachine) throws(KVMError) {
        let fd = owned.borrowed
        self.runArea = try MemoryMapping(length: vm.system.vcpuMmapSize, fd: fd, what: "mmap kvm_run of vCPU \(id)")
        if case let .ring(bytes, _) = vm.dirtyTracking {
            let ring = try DirtyRing(vcpuFD: fd, bytes: bytes, vcpu: id)
            vm.dirtyRings.append(ring)
        }
        self.owned = owned
        self.id = id
        self.vm = vm
    }

    /// Safety: kvm_run is at the start of the mapping, which is at least sizeof(kvm_run)
    /// (checked in KVMSystem.init) and lives as long as `self`.
    private var runState: UnsafeMutablePointer<kvm_run> { runArea.base.assumingMemoryBound(to: kvm_run.self) }

    /// KVM_RUN until the next exit, decoded.
    public func run() throws(KVMError) -> VMExit {
        pendingInput = nil
        let result = cuapi_ioctl_int(fd.rawValue, CKVM_RUN, 0)
        if result < 0 {
            let code = Errno(rawValue: errno)
            // Not retried: EINTR from KVM_RUN is how a signal stops a vCPU on purpose.
            if code == .interrupted { return .interrupted }
            throw .system(operation: "KVM_RUN on vCPU \(id)", errno: code)
        }
        return decodeExit()
    }

    private func decodeExit() -> VMExit {
        let state = runState.pointee
        switch state.exit_reason {
        case UInt32(KVM_EXIT_IO):
            let io = state.io
            let size = Int(io.size), count = Int(io.count), length = size * count
            let offset = Int(io.data_offset)
            // The kernel puts the data inside the vCPU mapping; refuse to read outside it.
            guard offset >= 0, length >= 0, offset <= runArea.length, length <= runArea.length - offset else {
                return .other(reason: state.exit_reason)
            }
            if io.direction == UInt8(KVM_EXIT_IO_OUT) {
                let data = Array(UnsafeRawBufferPointer(start: runArea.base + offset, count: length))
                return .io(port: io.port, direction: .out, size: size, count: count, data: data)
            }
            pendingInput = .io(offset: offset, length: length)
            return .io(port: io.port, direction: .in, size: size, count: count, data: [])
        case UInt32(KVM_EXIT_MMIO):
            let mmio = state.mmio
            let length = min(Int(mmio.len), 8)
            if mmio.is_write != 0 {
                let data = withUnsafeBytes(of: mmio.data) { Array($0.prefix(length)) }
                return .mmio(address: mmio.phys_addr, isWrite: true, length: length, data: data)
            }
            pendingInput = .mmio(length: length)
            return .mmio(address: mmio.phys_addr, isWrite: false, length: length, data: [])
        case UInt32(KVM_EXIT_HLT):
            return .halt
        case UInt32(KVM_EXIT_DIRTY_RING_FULL):
            return .dirtyRingFull
        case UInt32(KVM_EXIT_FAIL_ENTRY):
            return .failEntry(reason: state.fail_entry.hardware_entry_failure_reason)
        case UInt32(KVM_EXIT_INTERNAL_ERROR):
            // ndata comes from the kernel: at most the 16 words the struct holds.
            let count = min(Int(state.internal.ndata), 16)
            let data = withUnsafeBytes(of: state.internal.data) { raw in (0..<count).map { raw.load(fromByteOffset: $0 * 8, as: UInt64.self) } }
            return .internalError(suberror: state.internal.suberror, data: data)
        case UInt32(KVM_EXIT_SHUTDOWN):
            return .shutdown
        case UInt32(KVM_EXIT_INTR):
            return .interrupted
        default:
            return .other(reason: state.exit_reason)
        }
    }

    /// The data for the last exit's `in` or MMIO read; KVM hands it to the guest on the next run.
    public func provideInput(_ bytes: [UInt8]) throws(KVMError) {
        guard let pending = pendingInput else {
            throw .invalidState("vCPU \(id): the last exit was not an `in` or MMIO read")
        }
        switch pending {
        case let .io(offset, length):
            guard bytes.count == length else {
                throw .invalidArgument("vCPU \(id): the guest expects \(length) bytes, got \(bytes.count)")
            }
            // Safety: `offset ..< offset + length` was checked to lie inside the vCPU mapping.
            bytes.withUnsafeBytes { source in
                if let from = source.baseAddress { (runArea.base + offset).copyMemory(from: from, byteCount: length) }
            }
        case let .mmio(length):
            guard bytes.count == length else {
                throw .invalidArgument("vCPU \(id): the guest expects \(length) bytes, got \(bytes.count)")
            }
            // kvm_run.mmio sits in an anonymous union, so its offset is not known to Swift:
            // write it through the imported accessor instead (the vCPU is not running).
            var data = runState.pointee.mmio.data
            withUnsafeMutableBytes(of: &data) { target in
                for (index, byte) in bytes.enumerated() where index < target.count { target[index] = byte }
            }
            runState.pointee.mmio.data = data
        }
        pendingInput = nil
    }

    // MARK: Registers

    /// KVM_GET_REGS: the general-purpose registers.
    public func registers() throws(KVMError) -> kvm_regs {
        var regs = kvm_regs()
        try ioctlStruct(fd, CKVM_GET_REGS, &regs, "KVM_GET_REGS on vCPU \(id)")
        return regs
    }

    /// KVM_SET_REGS.
    public func setRegisters(_ regs: kvm_regs) throws(KVMError) {
        var copy = regs
        try ioctlStruct(fd, CKVM_SET_REGS, &copy, "KVM_SET_REGS on vCPU \(id)")
    }

    /// KVM_GET_SREGS: segment, control and descriptor-table registers.
    public func specialRegisters() throws(KVMError) -> kvm_sregs {
        var sregs = kvm_sregs()
        try ioctlStruct(fd, CKVM_GET_SREGS, &sregs, "KVM_GET_SREGS on vCPU \(id)")
        return sregs
    }

    /// KVM_SET_SREGS.
    public func setSpecialRegisters(_ sregs: kvm_sregs) throws(KVMError) {
        var copy = sregs
        try ioctlStruct(fd, CKVM_SET_SREGS, &copy, "KVM_SET_SREGS on vCPU \(id)")
    }

    /// x86: start executing 16-bit real-mode code at `segment:offset`, with DS, ES and SS equal
    /// to CS. Other registers are zero except RFLAGS' reserved bit 1 and `stackPointer`.
    public func enterRealMode(segment: UInt16 = 0, offset: UInt16, stackPointer: UInt16 = 0) throws(KVMError) {
        var sregs = try specialRegisters()
        for keyPath in [\kvm_sregs.cs, \.ds, \.es, \.ss] {
            sregs[keyPath: keyPath].selector = segment
            sregs[keyPath: keyPath].base = UInt64(segment) << 4
        }
        try setSpecialRegisters(sregs)
        var regs = kvm_regs()
        regs.rip = UInt64(offset)
        regs.rsp = UInt64(stackPointer)
        regs.rflags = 0x2  // bit 1 of RFLAGS is reserved and reads as 1
        try setRegisters(regs)
    }

    /// x86: start executing 32-bit protected-mode code at `entry`, paging off, with flat 4 GiB
    /// code and data segments (base 0, limit 4 GiB): the guest reaches all memory below 4 GiB
    /// with plain addresses. The segments go straight into the hidden descriptor caches, so the
    /// guest needs no GDT as long as it loads no segment register. `registers` gives the
    /// general registers (rip and rflags are set here).
    public func enterFlatProtectedMode(entry: UInt32, registers: kvm_regs = kvm_regs()) throws(KVMError) {
        var sregs = try specialRegisters()
        var code = kvm_segment()
        code.base = 0
        code.limit = 0xffff_ffff
        code.selector = 0x08
        code.type = 0xb      // execute/read, accessed
        code.present = 1
        code.s = 1           // code or data, not system
        code.db = 1          // 32-bit
        code.g = 1           // limit in 4 KiB units
        var data = code
        data.selector = 0x10
        data.type = 0x3      // read/write, accessed
        sregs.cs = code
        for keyPath in [\kvm_sregs.ds, \.es, \.ss, \.fs, \.gs] { sregs[keyPath: keyPath] = data }
        sregs.cr0 |= 1       // PE
        try setSpecialRegisters(sregs)
        var regs = registers
        regs.rip = UInt64(entry)
        regs.rflags = 0x2
        try setRegisters(regs)
    }
}
