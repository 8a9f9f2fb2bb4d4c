#if canImport(Glibc)
import Glibc
#endif
import SystemPackage
import SystemCalls

/// An exclusive lock held while bindings change, so two vfioctl processes never interleave
/// their steps. flock(2) on a file in the state directory: the kernel drops it when the process
/// dies, so a killed run never leaves a stale lock.
public final class BindingLock {
    private let descriptor: FileDescriptor
    /// The lock file.
    public let path: String

    /// The longest wait a caller may ask for: a day.
    public static let maximumTimeout: Double = 86_400

    /// Test hook (`BindingTestHooks.lockTracePath`): where acquiring and releasing are logged.
    private let tracePath: String?

    /// Waits up to `timeout` seconds (0...maximumTimeout) for the lock; `hooks` may name a trace
    /// file (tests only).
    public init(directory: String, timeout: Double, hooks: BindingTestHooks = .none) throws(BindingError) {
        path = directory + "/lock"
        tracePath = hooks.lockTracePath
        // The CLI validates its option; library callers get the same limits.
        guard timeout.isFinite, timeout >= 0, timeout <= Self.maximumTimeout else {
            throw .lockUnavailable(path: path, reason: "the timeout \(timeout) is not between 0 and \(Int(Self.maximumTimeout)) seconds")
        }
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw .lockUnavailable(path: path, reason: "cannot create its directory: \(String(cString: strerror(errno)))")
        }
        // Non-blocking, never through a symlink, only a regular file: the lock is a file of ours.
        do { descriptor = FileDescriptor(rawValue: try SafeFile.openOwnFile(path, flags: O_RDWR | O_CREAT)) } catch {
            throw .lockUnavailable(path: path, reason: error.reason)
        }
        let deadline = Self.now() + timeout
        while flock(descriptor.rawValue, LOCK_EX | LOCK_NB) != 0 {
            let failure = errno
            guard failure == EWOULDBLOCK || failure == EINTR else {
                try? descriptor.close()
                throw .lockUnavailable(path: path, reason: String(cString: strerror(failure)))
            }
            if Self.now() >= deadline {
                let holder = Self.holder(path)
                try? descriptor.close()
                throw .lockTimeout(path: path, seconds: timeout, holder: holder)
            }
            usleep(20_000)
        }
        // Who holds it, for the next process's message.
        _ = ftruncate(descriptor.rawValue, 0)
        _ = try? descriptor.writeAll(toAbsoluteOffset: 0, Array("\(getpid())\n".utf8))
        trace("acquired")
    }

    deinit {
        trace("released")
        _ = flock(descriptor.rawValue, LOCK_UN)
        try? descriptor.close()
    }

    /// Appends "pid event monotonic-ns" to the trace file, when a test names one.
    func trace(_ event: String) {
        guard let path = tracePath else { return }
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        let line = "\(getpid()) \(event) \(Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))\n"
        guard let file = try? FileDescriptor.open(path, .writeOnly, options: [.create, .append, .closeOnExec],
                                                  permissions: [.ownerReadWrite]) else { return }
        _ = try? file.closeAfter { try file.writeAll(Array(line.utf8)) }
    }

    static func holder(_ path: String) -> String? {
        guard let bytes = try? SafeFile.read(path, limit: 64, followFinalLink: false) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: [" ", "\n"])
        return text.isEmpty ? nil : text
    }

    static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}

extension String {
    func trimmingCharacters(in set: Set<Character>) -> String {
        var text = Substring(self)
        while let first = text.first, set.contains(first) { text = text.dropFirst() }
        while let last = text.last, set.contains(last) { text = text.dropLast() }
        return String(text)
    }
}
