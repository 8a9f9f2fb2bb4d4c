#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import PageAlignment
import SystemCalls
import SystemPackage

/// Host memory to back memslots: anonymous, or a shared tmpfs file (like a memfd: a second
/// mapping, or another process given the descriptor, sees the same pages, as with a device BAR).
/// Unmapped when the last reference goes; a VM keeps a reference while a slot points into it.
public final class GuestMemory {
    /// What backs guest memory: anonymous memory, or a shared memfd that can be mapped again.
    public enum Backing: Sendable, Equatable {
        case anonymous
        /// A memfd (memfd_create(2)): shared memory named only by its descriptor, which can be
        /// mapped again, as a VFIO region can; `name` shows in /proc/PID/maps.
        case shared(name: String)
    }

    let mapping: MemoryMapping
    /// The file, for `.shared` backing: kept open so the memory can be mapped again.
    let file: OwnedFileDescriptor?
    /// What backs this memory.
    public let backing: Backing

    /// Allocates `size` bytes (rounded up to whole pages), zero-filled. Pages are not touched here:
    /// the kernel supplies them on first access, guest or host.
    public init(size: Int, backing: Backing = .anonymous) throws(KVMError) {
        guard size > 0 else { throw .invalidArgument("guest memory size must be positive, got \(size)") }
        guard let whole = AddressAlignment.roundUp(UInt64(size), to: BasePage.size), let rounded = Int(exactly: whole) else {
            throw .invalidArgument("guest memory size \(size) does not fit the address space when rounded up to whole pages")
        }
        switch backing {
        case .anonymous:
            self.file = nil
            self.mapping = try MemoryMapping(length: rounded, fd: nil, what: "mmap \(rounded) bytes of guest memory")
        case let .shared(name):
            // Owned: a failure below drops it, which closes it once.
            let file = try Self.createSharedFile(name: name)
            guard ftruncate(file.rawValue, off_t(rounded)) == 0 else {
                throw .system(operation: "ftruncate shared memory \(name) to \(rounded)", errno: Errno(rawValue: errno))
            }
            self.mapping = try MemoryMapping(length: rounded, fd: file.borrowed, what: "mmap shared memory \(name)")
            self.file = consume file
        }
        self.backing = backing
    }

    /// A memfd, close-on-exec: it lives only as long as its descriptor and mappings.
    private static func createSharedFile(name: String) throws(KVMError) -> OwnedFileDescriptor {
        let raw = cuapi_memfd_create("vfioctl-\(name)", CUAPI_MFD_CLOEXEC)
        guard raw >= 0 else { throw .system(operation: "memfd_create \(name)", errno: Errno(rawValue: errno)) }
        return OwnedFileDescriptor(rawValue: raw)
    }

    /// Bytes of guest memory.
    public var size: Int { mapping.length }
    /// The host address, for kvm_userspace_memory_region.userspace_addr.
    public var hostAddress: UInt64 { UInt64(UInt(bitPattern: mapping.base)) }

    /// Copies `bytes` in at `offset`.
    public func write(_ bytes: [UInt8], at offset: Int) throws(KVMError) {
        try checkRange(offset, bytes.count)
        // Safety: the range was checked to lie inside the live mapping.
        bytes.withUnsafeBytes { source in
            if let from = source.baseAddress { (mapping.base + offset).copyMemory(from: from, byteCount: source.count) }
        }
    }

    /// Copies `count` bytes out from `offset`.
    public func read(at offset: Int, count: Int) throws(KVMError) -> [UInt8] {
        try checkRange(offset, count)
        // Safety: the range was checked to lie inside the live mapping.
        return Array(UnsafeRawBufferPointer(start: mapping.base + offset, count: count))
    }

    private func checkRange(_ offset: Int, _ count: Int) throws(KVMError) {
        guard offset >= 0, count >= 0, offset <= size, count <= size - offset else {
            throw .invalidArgument("guest memory access of \(count) bytes at \(offset) is outside its \(size) bytes")
        }
    }
}
