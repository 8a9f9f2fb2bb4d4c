#if canImport(Glibc)
import Glibc
#endif
import CLinuxUAPI
import SystemCalls
import SystemPackage

/// One CPUID leaf as KVM reports and takes it (kvm_cpuid_entry2, without its padding).
public struct CPUIDEntry: Sendable, Equatable {
    /// EAX on input: the leaf.
    public var function: UInt32
    /// ECX on input: the subleaf, where `flags` says it matters.
    public var index: UInt32
    /// KVM_CPUID_FLAG_* (significant index...).
    public var flags: UInt32
    /// The registers the leaf returns.
    public var eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32

    /// A leaf with these values.
    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0, eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32) {
        self.function = function
        self.index = index
        self.flags = flags
        self.eax = eax
        self.ebx = ebx
        self.ecx = ecx
        self.edx = edx
    }

    init(_ raw: kvm_cpuid_entry2) {
        self.init(function: raw.function, index: raw.index, flags: raw.flags, eax: raw.eax, ebx: raw.ebx, ecx: raw.ecx, edx: raw.edx)
    }

    var raw: kvm_cpuid_entry2 {
        var entry = kvm_cpuid_entry2()
        entry.function = function
        entry.index = index
        entry.flags = flags
        entry.eax = eax
        entry.ebx = ebx
        entry.ecx = ecx
        entry.edx = edx
        return entry
    }
}

/// kvm_cpuid2 with its flexible entries: one buffer laid out as the kernel reads and writes it.
private func withCPUIDBuffer<T>(capacity: Int, entries: [CPUIDEntry], _ body: (UnsafeMutableRawPointer) throws(KVMError) -> T) throws(KVMError) -> T {
    let entrySize = MemoryLayout<kvm_cpuid_entry2>.stride
    let size = Int(CKVM_CPUID2_ENTRIES_OFFSET) + capacity * entrySize
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
    // Safety: the buffer holds the header and `capacity` >= entries.count entries.
    buffer.storeBytes(of: UInt32(max(capacity, entries.count)), toByteOffset: Int(CKVM_CPUID2_NENT_OFFSET), as: UInt32.self)
    for (index, entry) in entries.prefix(capacity).enumerated() {
        buffer.storeBytes(of: entry.raw, toByteOffset: Int(CKVM_CPUID2_ENTRIES_OFFSET) + index * entrySize, as: kvm_cpuid_entry2.self)
    }
    return try body(buffer)
}

extension KVMSystem {
    /// KVM_GET_SUPPORTED_CPUID: the leaves a guest may be given, as this host's KVM supports
    /// them (the starting point of any vCPU's CPUID). Asks with room for 256 leaves, then more
    /// if the kernel says that was too few (E2BIG).
    public func supportedCPUID() throws(KVMError) -> [CPUIDEntry] {
        var capacity = 256
        while true {
            do {
                return try withCPUIDBuffer(capacity: capacity, entries: []) { (buffer) throws(KVMError) -> [CPUIDEntry] in
                    // Safety: `buffer` is a kvm_cpuid2 with `capacity` entries, valid for the call.
                    _ = try SystemCall.value({ cuapi_ioctl_ptr(fd.rawValue, CKVM_GET_SUPPORTED_CPUID, buffer) }) {
                        KVMError.system(operation: "KVM_GET_SUPPORTED_CPUID (\(capacity) entries)", errno: $0)
                    }
                    let count = min(Int(buffer.load(fromByteOffset: Int(CKVM_CPUID2_NENT_OFFSET), as: UInt32.self)), capacity)
                    let stride = MemoryLayout<kvm_cpuid_entry2>.stride
                    return (0..<count).map {
                        CPUIDEntry(buffer.load(fromByteOffset: Int(CKVM_CPUID2_ENTRIES_OFFSET) + $0 * stride, as: kvm_cpuid_entry2.self))
                    }
                }
            } catch let error {
                guard case let .system(_, errno) = error, errno == Errno(rawValue: E2BIG), capacity < 4096 else { throw error }
                capacity *= 2
            }
        }
    }
}

extension VirtualCPU {
    /// KVM_SET_CPUID2: what CPUID returns in this vCPU (before its first run).
    public func setCPUID(_ entries: [CPUIDEntry]) throws(KVMError) {
        try withCPUIDBuffer(capacity: entries.count, entries: entries) { (buffer) throws(KVMError) in
            // Safety: `buffer` is a kvm_cpuid2 with exactly `entries.count` entries, valid for the call.
            _ = try SystemCall.value({ cuapi_ioctl_ptr(fd.rawValue, CKVM_SET_CPUID2, buffer) }) {
                KVMError.system(operation: "KVM_SET_CPUID2 (\(entries.count) entries)", errno: $0)
            }
        }
    }
}

extension VirtualMachine {
    /// KVM_CREATE_PIT2: the in-kernel i8254 timer (channel 0 on the irqchip's pin 0), with a
    /// dummy speaker port so port 0x61 is served too. Needs the in-kernel irqchip first
    /// (`InterruptController`); at most once per VM.
    public func createPIT() throws(KVMError) {
        var config = kvm_pit_config()
        config.flags = CKVM_PIT_SPEAKER_DUMMY
        try ioctlStruct(fd, CKVM_CREATE_PIT2, &config, "KVM_CREATE_PIT2")
    }
}
