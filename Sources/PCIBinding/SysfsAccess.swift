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

/// Writes through the real file system, each write bounded by `BoundedWrite`, and never
/// outside the sysfs root: the attribute is opened beneath the root (openat2 RESOLVE_BENEATH, no
/// symlink that leaves it, no FIFO or device node in its place; `SafeFile.openBeneath`) by this
/// process, and the child that may block in the kernel only writes to that descriptor.
public struct KernelSysfsWriter: SysfsWriting {
    /// The sysfs root, links resolved: every path written lies beneath it.
    public let root: String

    /// A writer confined to `root` (its links already resolved, as `Binder` has them).
    public init(root: String) { self.root = root }

    /// Writes `value` to `path` in one write(2), bounded by `timeout` seconds; throws `.sysfsWrite`
    /// with the kernel's reason, `.untrustedSysfs` for a path that is not an attribute beneath
    /// the root, or `.sysfsTimeout` when the kernel has not returned.
    public func write(_ value: String, to path: String, timeout: Double) throws(BindingError) {
        let shown = value.trimmingCharacters(in: ["\n"])
        let prefix = root.hasSuffix("/") ? root : root + "/"
        guard path.hasPrefix(prefix), path.count > prefix.count else {
            throw .untrustedSysfs(path: path, reason: "it is not beneath the sysfs root \(root); nothing was written")
        }
        let descriptor: Int32
        do { descriptor = try SafeFile.openBeneath(root: root, relative: String(path.dropFirst(prefix.count)), flags: O_WRONLY) } catch {
            throw .sysfsWrite(path: path, value: shown, reason: error.reason)
        }
        defer { close(descriptor) }
        switch BoundedWrite.write(value, descriptor: descriptor, timeout: timeout) {
        case .written:
            return
        case .failed(let reason):
            throw .sysfsWrite(path: path, value: shown, reason: reason)
        case .pending(let helper):
            throw .sysfsTimeout(path: path, value: shown, seconds: timeout, state: "pid \(helper) finishes the write when the kernel returns")
        }
    }
}
