#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import PageAlignment
import SystemCalls
import SystemPackage

/// Runs a SystemPackage call and turns its untyped `Errno` into a `KVMError` naming `operation`.
@inline(__always)
func withErrno<T>(_ operation: @autoclosure () -> String, _ body: () throws -> T) throws(KVMError) -> T {
    try SystemCall.mapping(body) { KVMError.system(operation: operation(), errno: $0) }
}

/// ioctl with no argument or an integer argument; returns the ioctl's non-negative result.
/// EINTR is retried: none of the requests sent through here has a side effect before it fails.
@discardableResult
func ioctlValue(_ fd: FileDescriptor, _ request: UInt, _ argument: UInt = 0,
                _ what: @autoclosure () -> String) throws(KVMError) -> Int32 {
    try SystemCall.ioctl(fd, request, argument) { KVMError.system(operation: what(), errno: $0) }
}

/// ioctl whose argument is a struct the kernel reads and/or fills in.
/// Contract: `T` is the exact uapi struct `request` expects (the CLinuxUAPI import of it), so the
/// pointer handed over covers the layout and size the kernel reads and writes.
@discardableResult
func ioctlStruct<T>(_ fd: FileDescriptor, _ request: UInt, _ value: inout T,
                    _ what: @autoclosure () -> String) throws(KVMError) -> Int32 {
    try SystemCall.ioctl(fd, request, &value) { KVMError.system(operation: what(), errno: $0) }
}

/// The host's page size: slot addresses and sizes must be multiples of it.
let hostPageSize = Int(BasePage.size)

/// An mmap(2) region, unmapped exactly once when the last reference goes.
final class MemoryMapping {
    let base: UnsafeMutableRawPointer
    let length: Int

    /// Maps `length` bytes. `fd` nil gives anonymous private memory; otherwise a shared mapping
    /// of the file at `offset` (a vCPU's kvm_run, its dirty ring, a memfd).
    init(length: Int, protection: Int32 = PROT_READ | PROT_WRITE, fd: FileDescriptor?,
         offset: Int = 0, what: @autoclosure () -> String) throws(KVMError) {
        let flags = fd == nil ? (MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE) : MAP_SHARED
        let pointer = mmap(nil, length, protection, flags, fd?.rawValue ?? -1, off_t(offset))
        guard let pointer, pointer != MAP_FAILED else {
            throw .system(operation: what(), errno: Errno(rawValue: errno))
        }
        self.base = pointer
        self.length = length
    }

    deinit {
        // Safety: `base`/`length` are exactly what mmap returned and nothing else unmaps them;
        // every pointer handed out is documented as valid only while this object lives.
        munmap(base, length)
    }
}
