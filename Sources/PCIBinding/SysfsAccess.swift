#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Foundation
import SystemCalls

/// The kernel side of a binding change: one write to a sysfs attribute. A seam so that tests can
/// put an emulated kernel behind a fixture tree; vfioctl itself uses `KernelSysfsWriter`.
public protocol SysfsWriting: Sendable {
    /// Writes `value` to `path` (already resolved inside the sysfs root) and returns once the
    /// kernel has taken it; throws `.sysfsWrite` with the kernel's reason.
    func write(_ value: String, to path: String) throws(BindingError)
}

/// Writes through the real file system.
public struct KernelSysfsWriter: SysfsWriting {
    public init() {}

    public func write(_ value: String, to path: String) throws(BindingError) {
        let descriptor: Int32
        do { descriptor = try AttributeFile.open(path, flags: O_WRONLY) } catch {
            throw .sysfsWrite(path: path, value: value.trimmingCharacters(in: ["\n"]), reason: error.reason)
        }
        defer { close(descriptor) }
        let bytes = Array(value.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count else {
            let reason = written < 0 ? String(cString: strerror(errno)) : "short write (\(written) of \(bytes.count) bytes)"
            throw .sysfsWrite(path: path, value: value.trimmingCharacters(in: ["\n"]), reason: reason)
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

/// Runs work that may block in the kernel (a driver's probe or remove that never returns) on
/// another thread and waits a bounded time. Work still running at the deadline cannot be
/// cancelled; it is left to finish (or never) and the caller reports the timeout.
enum Bounded {
    final class Slot<Value>: @unchecked Sendable {
        // Written once by the worker before it signals, read after the wait succeeds.
        let lock = NSLock()
        var value: Value?
    }

    static func run<Value>(seconds: Double, _ work: @escaping @Sendable () -> Value) -> Value? {
        let slot = Slot<Value>()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let result = work()
            slot.lock.withLock { slot.value = result }
            done.signal()
        }
        // Callers pass validated, finite timeouts; clamp anyway so the deadline cannot overflow.
        let bounded = seconds.isFinite ? min(max(seconds, 0), 86_400) : 86_400
        guard done.wait(timeout: .now() + bounded) == .success else { return nil }
        return slot.lock.withLock { slot.value }
    }
}
