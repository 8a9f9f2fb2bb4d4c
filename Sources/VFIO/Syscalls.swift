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
/// heads a zeroed `size`-byte buffer (`FlexibleArrayBuffer`, the chain as its byte array), its
/// `argsz` set to `size`; returns the buffer as the kernel filled it. The size comes from the
/// kernel's own argsz: at most 1 MiB (a capability chain is a few hundred bytes) is allocated.
/// Contract: `T` is the uapi struct `request` expects.
func ioctlBuffer<T>(_ fd: FileDescriptor, _ request: UInt, template: T, argsz: WritableKeyPath<T, UInt32>, size: Int,
                    _ what: @autoclosure () -> String) throws(VFIOError) -> InfoBuffer {
    let chain = max(0, size - MemoryLayout<T>.size)
    var buffer = try flexibleArray(header: template, capacity: chain, of: UInt8.self, arrayOffset: MemoryLayout<T>.size, argsz: argsz,
                                   limit: 1 << 20, what())
    // Safety: the kernel writes at most argsz (= the buffer's size) bytes.
    try ioctlBytes(fd, request, &buffer.bytes, what())
    return InfoBuffer(bytes: buffer.bytes)
}

/// `FlexibleArrayLayout` for a VFIO struct; a size no argsz can hold is `.unsupported`.
func flexibleLayout<Header, Element>(_ header: Header.Type, _ element: Element.Type, arrayOffset: Int, count: Int) throws(VFIOError) -> FlexibleArrayLayout {
    do { return try FlexibleArrayLayout(header, element, arrayOffset: arrayOffset, count: count) } catch {
        throw .unsupported("\(Header.self): \(error)")
    }
}

/// A VFIO header with `elements` after it (`FlexibleArrayBuffer`); a size no argsz can hold is
/// `.unsupported`.
func flexibleArray<Header, Element>(header: Header, elements: [Element], arrayOffset: Int, argsz: WritableKeyPath<Header, UInt32>,
                                    countField: WritableKeyPath<Header, UInt32>? = nil) throws(VFIOError) -> FlexibleArrayBuffer<Header, Element> {
    do { return try FlexibleArrayBuffer(header: header, elements: elements, arrayOffset: arrayOffset, argsz: argsz, countField: countField) } catch {
        throw .unsupported("\(Header.self) with \(elements.count) elements: \(error)")
    }
}

/// A VFIO header with room for `capacity` elements the kernel fills in.
func flexibleArray<Header, Element>(header: Header, capacity: Int, of _: Element.Type, arrayOffset: Int, argsz: WritableKeyPath<Header, UInt32>,
                                    limit: Int, _ what: @autoclosure () -> String) throws(VFIOError) -> FlexibleArrayBuffer<Header, Element> {
    do { return try FlexibleArrayBuffer(header: header, capacity: capacity, arrayOffset: arrayOffset, argsz: argsz, limit: limit) } catch {
        throw .unsupported("\(what()): \(error)")
    }
}
