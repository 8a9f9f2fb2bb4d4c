#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SystemCalls

/// The kernel side of a binding change: one write to a sysfs attribute. A seam so that tests can
/// put an emulated kernel behind a fixture tree; vfioctl itself uses `KernelSysfsWriter`.
public protocol SysfsWriting: Sendable {
    /// Writes `value` to `path` (already resolved inside the sysfs root) and returns once the
    /// kernel has taken it; throws `.sysfsWrite` with the kernel's reason, or `.sysfsTimeout`
    /// (its state saying what finishes the write) when the kernel has not returned within
    /// `timeout` seconds.
    func write(_ value: String, to path: String, timeout: Double) throws(BindingError)
}

/// Writes through the real file system, each write bounded by `BoundedWrite`.
public struct KernelSysfsWriter: SysfsWriting {
    /// The writer.
    public init() {}

    /// Writes `value` to `path` in one write(2), bounded by `timeout` seconds; throws `.sysfsWrite`
    /// with the kernel's reason or `.sysfsTimeout` when the kernel has not returned.
    public func write(_ value: String, to path: String, timeout: Double) throws(BindingError) {
        let shown = value.trimmingCharacters(in: ["\n"])
        // An attribute is a regular file; anything planted in its place is refused before the
        // write (which follows the path as given, like the open here).
        do { close(try AttributeFile.open(path, flags: O_WRONLY)) } catch {
            throw .sysfsWrite(path: path, value: shown, reason: error.reason)
        }
        switch BoundedWrite.write(value, to: path, timeout: timeout) {
        case .written:
            return
        case .failed(let reason):
            throw .sysfsWrite(path: path, value: shown, reason: reason)
        case .pending(let helper):
            throw .sysfsTimeout(path: path, value: shown, seconds: timeout, state: "pid \(helper) finishes the write when the kernel returns")
        }
    }
}

/// Opening sysfs attributes (and the journal) so that nothing planted in a tree can block: with
/// O_NONBLOCK a FIFO opens (or fails) at once, and anything but a regular file is refused.
enum AttributeFile {
    struct Failure: Error { let reason: String }

    static func open(_ path: String, flags: Int32) throws(Failure) -> Int32 {
        let descriptor = Glibc.open(path, flags | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else { throw Failure(reason: String(cString: strerror(errno))) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            close(descriptor)
            throw Failure(reason: "not a regular file (sysfs attributes are)")
        }
        return descriptor
    }

    /// Reads up to `limit` bytes.
    static func read(_ path: String, limit: Int = 4096) throws(Failure) -> [UInt8] {
        let descriptor = try open(path, flags: O_RDONLY)
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < limit {
            let count = try SystemCall.value({ chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) } }) {
                Failure(reason: String(cString: strerror($0.rawValue)))
            }
            if count == 0 { return bytes }
            bytes += chunk[..<count]
        }
        throw Failure(reason: "larger than \(limit) bytes")
    }
}
