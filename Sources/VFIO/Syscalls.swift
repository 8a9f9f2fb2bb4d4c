#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import SystemPackage

/// Runs a SystemPackage call and turns its untyped `Errno` into a `VFIOError` naming `operation`.
@inline(__always)
func withErrno<T>(_ operation: @autoclosure () -> String, _ body: () throws -> T) throws(VFIOError) -> T {
    do {
        return try body()
    } catch let errno as Errno {
        throw .system(operation: operation(), errno: errno)
    } catch {
        // SystemPackage throws only Errno; anything else is still reported, as EIO.
        throw .system(operation: operation() + " (\(error))", errno: .ioError)
    }
}

/// Opens a character device read-write; the descriptor is not inherited across exec.
func openCharacterDevice(_ path: String) throws(VFIOError) -> FileDescriptor {
    try withErrno("open \(path)") {
        try FileDescriptor.open(FilePath(path), .readWrite, options: [.closeOnExec])
    }
}

/// ioctl with no argument or an integer argument; returns the ioctl's non-negative result.
@discardableResult
func ioctlValue(_ fd: FileDescriptor, _ request: UInt, _ argument: UInt = 0, _ what: @autoclosure () -> String) throws(VFIOError) -> Int32 {
    while true {
        let result = cuapi_ioctl_int(fd.rawValue, request, argument)
        if result >= 0 { return result }
        let code = Errno(rawValue: errno)
        if code == .interrupted { continue }
        throw .system(operation: what(), errno: code)
    }
}

/// ioctl whose argument is a struct the kernel reads and/or fills in.
/// Contract: `T` is the exact uapi struct `request` expects (the CLinuxUAPI import of it), so the
/// pointer handed over covers the layout and size the kernel reads and writes.
@discardableResult
func ioctlStruct<T>(_ fd: FileDescriptor, _ request: UInt, _ value: inout T, _ what: @autoclosure () -> String) throws(VFIOError) -> Int32 {
    while true {
        let result = withUnsafeMutablePointer(to: &value) { pointer in
            // Safety: the pointer is valid for the whole call and points to a `T` (see contract).
            cuapi_ioctl_ptr(fd.rawValue, request, UnsafeMutableRawPointer(pointer))
        }
        if result >= 0 { return result }
        let code = Errno(rawValue: errno)
        if code == .interrupted { continue }
        throw .system(operation: what(), errno: code)
    }
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
    while true {
        let result = bytes.withUnsafeMutableBytes { buffer in
            // Safety: the kernel writes at most argsz (= the buffer's size) bytes.
            cuapi_ioctl_ptr(fd.rawValue, request, buffer.baseAddress)
        }
        if result >= 0 { return InfoBuffer(bytes: bytes) }
        let code = Errno(rawValue: errno)
        if code == .interrupted { continue }
        throw .system(operation: what(), errno: code)
    }
}
