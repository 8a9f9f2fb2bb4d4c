#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PCIInventory

/// A sysfs write that may never return, bounded. A driver's remove can wait for its users
/// without limit (vfio-pci waits until the VM closes the device, nvidia until its clients exit),
/// and the write to `driver/unbind` waits with it, uninterruptibly once signalled: a thread of
/// this process stuck there would keep the process from exiting too. So the write runs in a
/// child process (/bin/sh's printf, the value and path passed as arguments, never parsed as
/// shell text); after `timeout` seconds the caller goes on and the child finishes the write
/// whenever the kernel lets it.
public enum BoundedWrite {
    /// How the write ended.
    public enum Result: Equatable, Sendable {
        case written
        case failed(String)
        /// Still blocked after the timeout; `helper` is the process that will finish it.
        case pending(helper: Int32)
    }

    /// Writes `value` to `path` in a child process and waits at most `timeout` seconds for it.
    public static func write(_ value: String, to path: String, timeout: Double, shell: String = "/bin/sh") -> Result {
        var pipeEnds: [Int32] = [-1, -1]
        guard pipe(&pipeEnds) == 0 else { return .failed("pipe: \(String(cString: strerror(errno)))") }
        // Neither end may leak into other children; dup2 gives the child its stderr without the flag.
        for end in pipeEnds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        defer { close(pipeEnds[0]) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 2)
        let arguments = [shell, "-c", "printf '%s' \"$1\" > \"$2\"", "vfioctl-write", value, path]
        // Contract: strdup'd C strings stay valid until freed after posix_spawn returns.
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = argv.withUnsafeBufferPointer { buffer -> Int32 in
            guard let base = buffer.baseAddress else { return EINVAL }
            return posix_spawn(&pid, shell, &actions, nil, base, environ)
        }
        close(pipeEnds[1])
        guard spawned == 0 else { return .failed("cannot start \(shell): \(String(cString: strerror(spawned)))") }
        let deadline = BindingLock.now() + max(0, timeout)
        var status: Int32 = 0
        while true {
            let waited = waitpid(pid, &status, WNOHANG)
            if waited == pid { break }
            if waited == -1 && errno != EINTR { return .failed("waitpid: \(String(cString: strerror(errno)))") }
            if BindingLock.now() >= deadline { return .pending(helper: pid) }
            usleep(10_000)
        }
        // WIFEXITED / WEXITSTATUS are macros Swift cannot import.
        if status & 0x7f == 0 && (status >> 8) & 0xff == 0 { return .written }
        var bytes = [UInt8](repeating: 0, count: 512)
        let count = bytes.withUnsafeMutableBytes { read(pipeEnds[0], $0.baseAddress, $0.count) }
        let message = count > 0 ? String(decoding: bytes[..<count], as: UTF8.self) : ""
        // sh's message ends with the kernel's strerror ("...: No such device"): keep its last part.
        let reason = message.split(separator: "\n").first.map { $0.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? String($0) }
        return .failed(reason.flatMap { $0.isEmpty ? nil : $0 } ?? "the write failed (status \(status))")
    }
}

extension Binder {
    /// Seconds a driver unbind may take before vfioctl stops waiting and reports who holds the
    /// device (`VFIOCTL_UNBIND_TIMEOUT` overrides it).
    public static var unbindTimeout: Double {
        ProcessInfo.processInfo.environment["VFIOCTL_UNBIND_TIMEOUT"].flatMap(Double.init).flatMap { $0 > 0 && $0 <= 3600 ? $0 : nil } ?? 10
    }

    /// Unbinds the device's driver. On the live kernel the write runs in a child process
    /// (`BoundedWrite`): a driver's remove that waits for a user (vfio-pci for a VM with the
    /// device open) is given up after `unbindTimeout` with the processes that hold the device
    /// named; the write finishes by itself once they let go, and the journal (marked before
    /// this is called) says the change is in progress, so `vfioctl restore` completes it. In
    /// tests, through the emulated kernel like every other write.
    func unbindDriver(_ address: PCIAddress) throws(BindingError) {
        let path = devicePath(address) + "/driver/unbind"
        guard kernel is KernelSysfsWriter else { return try write(address.description, to: path) }
        let resolved = try resolveInside(path, value: address.description)
        let driver = try? self.driver(of: address)
        let timeout = Self.unbindTimeout
        switch BoundedWrite.write(address.description, to: resolved, timeout: timeout) {
        case .written:
            return
        case .failed(let reason):
            throw .sysfsWrite(path: path, value: address.description, reason: reason)
        case .pending(let helper):
            var holders: [Holder] = []
            if root.isSystem {
                holders = HolderReader(sysfs: root).holders(of: [address], leavingVFIO: driver == BindPlan.targetDriver)[address] ?? []
            }
            let waitingFor = holders.isEmpty ? "a user of the device vfioctl cannot see"
                : holders.map(\.description).joined(separator: "; ")
            throw .sysfsTimeout(path: path, value: address.description, seconds: timeout,
                                state: "the \(driver ?? "device's") driver's remove waits for \(waitingFor); the unbind finishes by itself (pid \(helper)) once they let go")
        }
    }
}
