#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import SystemPackage

/// The one place where a C call's "negative result, errno set" becomes a Swift error and where
/// EINTR is retried (what swift-system does internally with `valueOrErrno` and
/// `_retryingOnInterrupt`), generic over the caller's error type so VFIO and KVM each keep
/// their own typed errors.
public enum SystemCall {
    /// Runs `call` (which returns a negative value and sets errno on failure) until it does
    /// anything but fail with EINTR. Only for calls that do nothing before failing with EINTR,
    /// so a retry repeats nothing.
    @inlinable
    public static func retryingOnInterrupt<Value: FixedWidthInteger>(_ call: () -> Value) -> Result<Value, Errno> {
        while true {
            let value = call()
            if value >= 0 { return .success(value) }
            let code = Errno(rawValue: errno)
            if code != .interrupted { return .failure(code) }
        }
    }

    /// `retryingOnInterrupt`, throwing `failure(errno)` for anything but success.
    @inlinable
    public static func value<Value: FixedWidthInteger, Failure: Error>(
        _ call: () -> Value, orThrow failure: (Errno) -> Failure
    ) throws(Failure) -> Value {
        switch retryingOnInterrupt(call) {
        case let .success(value): return value
        case let .failure(code): throw failure(code)
        }
    }

    /// Runs SystemPackage calls (which declare untyped throws but throw only `Errno`) and turns
    /// their `Errno` into the caller's error.
    @inlinable
    public static func mapping<Value, Failure: Error>(
        _ body: () throws -> Value, orThrow failure: (Errno) -> Failure
    ) throws(Failure) -> Value {
        do {
            return try body()
        } catch let code as Errno {
            throw failure(code)
        } catch {
            // Not reached with SystemPackage; any other error is still reported, as EIO.
            throw failure(.ioError)
        }
    }

    /// ioctl with no argument or an integer argument; returns the ioctl's non-negative result.
    /// EINTR is retried: callers send only requests that have no effect before they fail.
    @inlinable
    @discardableResult
    public static func ioctl<Failure: Error>(
        _ fd: FileDescriptor, _ request: UInt, _ argument: UInt = 0, orThrow failure: (Errno) -> Failure
    ) throws(Failure) -> Int32 {
        try value({ cuapi_ioctl_int(fd.rawValue, request, argument) }, orThrow: failure)
    }

    /// ioctl whose argument is a struct the kernel reads and/or fills in.
    /// Contract: `T` is the exact uapi struct `request` expects (the CLinuxUAPI import of it), so
    /// the pointer handed over covers the layout and size the kernel reads and writes.
    @inlinable
    @discardableResult
    public static func ioctl<T, Failure: Error>(
        _ fd: FileDescriptor, _ request: UInt, _ argument: inout T, orThrow failure: (Errno) -> Failure
    ) throws(Failure) -> Int32 {
        try value({
            withUnsafeMutablePointer(to: &argument) { pointer in
                // Safety: the pointer is valid for the whole call and points to a `T` (see contract).
                cuapi_ioctl_ptr(fd.rawValue, request, UnsafeMutableRawPointer(pointer))
            }
        }, orThrow: failure)
    }

    /// ioctl whose argument is a variable-size struct built in `bytes` (a fixed head, often with
    /// `argsz` first, then a payload).
    /// Contract: `bytes` holds the layout `request` expects and is as long as the kernel may read
    /// or write (its `argsz`, where it has one).
    @inlinable
    @discardableResult
    public static func ioctl<Failure: Error>(
        _ fd: FileDescriptor, _ request: UInt, bytes: inout [UInt8], orThrow failure: (Errno) -> Failure
    ) throws(Failure) -> Int32 {
        try value({
            bytes.withUnsafeMutableBytes { buffer in
                // Safety: the kernel touches at most the buffer's length (see contract).
                cuapi_ioctl_ptr(fd.rawValue, request, buffer.baseAddress)
            }
        }, orThrow: failure)
    }
}
