#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import SystemPackage
import SystemCalls

/// Runs a SystemPackage call and turns its untyped `Errno` into a `VFIOError` naming `operation`.
@inline(__always)
func withErrno<T>(_ operation: @autoclosure () -> String, _ body: () throws -> T) throws(VFIOError) -> T {
    try SystemCall.mapping(body) { VFIOError.system(operation: operation(), errno: $0) }
}

/// Opens a character device read-write; the descriptor is not inherited across exec.
func openCharacterDevice(_ path: String) throws(VFIOError) -> OwnedFileDescriptor {
    try OwnedFileDescriptor.open(FilePath(path), .readWrite) { VFIOError.system(operation: "open \(path)", errno: $0) }
}

/// ioctl with no argument or an integer argument; returns the ioctl's non-negative result.
@discardableResult
func ioctlValue(_ fd: FileDescriptor, _ request: UInt, _ argument: UInt = 0, _ what: @autoclosure () -> String) throws(VFIOError) -> Int32 {
    try SystemCall.ioctl(fd, request, argument) { VFIOError.system(operation: what(), errno: $0) }
}

/// ioctl whose argument is a struct the kernel reads and/or fills in.
/// Contract: `T` is the exact uapi struct `request` expects (the CLinuxUAPI import of it), so the
/// pointer handed over covers the layout and size the kernel reads and writes.
@discardableResult
func ioctlStruct<T>(_ fd: FileDescriptor, _ request: UInt, _ value: inout T, _ what: @autoclosure () -> String) throws(VFIOError) -> Int32 {
    try SystemCall.ioctl(fd, request, &value) { VFIOError.system(operation: what(), errno: $0) }
}

/// ioctl whose argument is a variable-size struct built in `bytes`.
/// Contract: as `SystemCall.ioctl(_:_:bytes:orThrow:)`: `bytes` is laid out as `request` expects.
@discardableResult
func ioctlBytes(_ fd: FileDescriptor, _ request: UInt, _ bytes: inout [UInt8], _ what: @autoclosure () -> String) throws(VFIOError) -> Int32 {
    try SystemCall.ioctl(fd, request, bytes: &bytes) { VFIOError.system(operation: what(), errno: $0) }
}

/// `argsz` for a uapi struct: the kernel uses it to tell which version of the struct it got.
func argsz<T>(_: T.Type) -> UInt32 { UInt32(MemoryLayout<T>.size) }

/// ioctl whose argument is a variable-size info struct (one with a capability chain): `template`
/// fills the fixed head of a zeroed `size`-byte buffer, with argsz set to `size`; returns the
/// buffer as the kernel filled it.
/// Contract: `T` is the uapi struct `request` expects, and its first field is `argsz` (u32).
func ioctlBuffer<T>(_ fd: FileDescriptor, _ request: UInt, template: T, size: Int, _ what: @autoclosure () -> String) throws(VFIOError) -> InfoBuffer {
    var bytes = [UInt8](repeating: 0, count: max(size, MemoryLayout<T>.size))
    var head = template
    withUnsafeBytes(of: &head) { source in
        bytes.withUnsafeMutableBytes { target in
            // Safety: the buffer is at least as large as T (see max above).
            target.copyMemory(from: source)
        }
    }
    let argsz = UInt32(bytes.count)
    for index in 0..<4 { bytes[index] = UInt8(truncatingIfNeeded: argsz >> (8 * UInt32(index))) }
    // Safety: the kernel writes at most argsz (= the buffer's size) bytes.
    try ioctlBytes(fd, request, &bytes, what())
    return InfoBuffer(bytes: bytes)
}
