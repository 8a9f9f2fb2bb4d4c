#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PCIInventory

/// Sysfs I/O that may never return, bounded: the one mechanism for every write (and the
/// driver_override read) that can wait on a driver. A driver's remove can wait for its users
/// without limit (vfio-pci waits until the VM closes the device, nvidia until its clients
/// exit); the write to `driver/unbind` waits with it, and every other access that takes the
/// device lock (driver_override, bind, drivers_probe) waits behind it. That wait is
/// uninterruptible: a thread of this process stuck there could not be cancelled and would keep
/// the process from exiting. So the access runs in a child process (/bin/sh, the value and path
/// passed as arguments, never parsed as shell text); after `timeout` seconds the caller goes on
/// and the child finishes whenever the kernel lets it.
public enum BoundedWrite {
    /// How the write ended.
    public enum Result: Equatable, Sendable {
        case written
        case failed(String)
        /// Still blocked after the timeout; `helper` is the process that will finish it.
        case pending(helper: Int32)
    }

    /// Writes `value` in one write(2) to `descriptor` (an attribute the caller opened and
    /// checked, beneath its root: the child opens nothing) in a child process, whose standard
    /// output it becomes, and waits at most `timeout` seconds for it.
    public static func write(_ value: String, descriptor: Int32, timeout: Double, shell: String = "/bin/sh") -> Result {
        switch run(shell: shell, script: "printf '%s' \"$1\"", arguments: [value], input: nil, output: descriptor, timeout: timeout) {
        case .exited(let status, _, let errors):
            // WIFEXITED / WEXITSTATUS are macros Swift cannot import.
            if status & 0x7f == 0 && (status >> 8) & 0xff == 0 { return .written }
            return .failed(reason(errors) ?? "the write failed (status \(status))")
        case .failed(let reason):
            return .failed(reason)
        case .pending(let helper):
            return .pending(helper: helper)
        }
    }

    /// What a bounded read gives back.
    enum ReadResult: Equatable {
        case read([UInt8])
        case failed(String)
        case pending(helper: Int32)
    }

    /// Reads up to `limit` bytes from `descriptor` (an attribute the caller opened and checked)
    /// in a child process, whose standard input it becomes.
    static func read(_ descriptor: Int32, limit: Int, timeout: Double, shell: String = "/bin/sh") -> ReadResult {
        switch run(shell: shell, script: "exec head -c \"$1\"", arguments: [String(limit + 1)], input: descriptor, output: nil, timeout: timeout) {
        case .exited(let status, let output, let errors):
            guard status & 0x7f == 0 && (status >> 8) & 0xff == 0 else {
                return .failed(reason(errors) ?? "the read failed (status \(status))")
            }
            return output.count > limit ? .failed("larger than \(limit) bytes") : .read(output)
        case .failed(let reason):
            return .failed(reason)
        case .pending(let helper):
            return .pending(helper: helper)
        }
    }

    /// sh's message ends with the kernel's strerror ("...: No such device"): its last part.
    private static func reason(_ errors: [UInt8]) -> String? {
        let message = String(decoding: errors, as: UTF8.self)
        let reason = message.split(separator: "\n").first.map { $0.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? String($0) }
        return reason.flatMap { $0.isEmpty ? nil : $0 }
    }

    private enum Outcome {
        case exited(status: Int32, output: [UInt8], errors: [UInt8])
        case failed(String)
        case pending(Int32)
    }

    /// Runs `shell -c script` with `arguments` as $1..., standard input from `input` (or
    /// /dev/null), standard output to `output` (or a pipe) and standard error into a pipe, the
    /// pipes read once it exits. The outputs must fit a pipe's buffer (64 KiB): they are a sysfs
    /// attribute and a one-line message.
    private static func run(shell: String, script: String, arguments: [String], input: Int32?, output target: Int32?, timeout: Double) -> Outcome {
        var output: [Int32] = [-1, -1]
        var errors: [Int32] = [-1, -1]
        guard pipe(&output) == 0 else { return .failed("pipe: \(String(cString: strerror(errno)))") }
        guard pipe(&errors) == 0 else {
            let reason = String(cString: strerror(errno))
            close(output[0]); close(output[1])
            return .failed("pipe: \(reason)")
        }
        // No end may leak into other children; dup2 gives the child its copies without the flag.
        for end in output + errors { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        defer { close(output[0]); close(errors[0]) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let input {
            posix_spawn_file_actions_adddup2(&actions, input, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, target ?? output[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errors[1], 2)
        // The child starts with no signal blocked and every signal at its default, whatever the
        // spawning thread had: a helper left pending must stay killable.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let words = [shell, "-c", script, "vfioctl-io"] + arguments
        // Contract: strdup'd C strings stay valid until freed after posix_spawn returns.
        let argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = argv.withUnsafeBufferPointer { buffer -> Int32 in
            guard let base = buffer.baseAddress else { return EINVAL }
            return posix_spawn(&pid, shell, &actions, &attributes, base, environ)
        }
        close(output[1])
        close(errors[1])
        guard spawned == 0 else { return .failed("cannot start \(shell): \(String(cString: strerror(spawned)))") }
        let deadline = BindingLock.now() + max(0, timeout)
        var status: Int32 = 0
        while true {
            let waited = waitpid(pid, &status, WNOHANG)
            if waited == pid { break }
            if waited == -1 && errno != EINTR { return .failed("waitpid: \(String(cString: strerror(errno)))") }
            if BindingLock.now() >= deadline { return .pending(pid) }
            usleep(10_000)
        }
        return .exited(status: status, output: drain(output[0]), errors: drain(errors[0]))
    }

    /// Everything left in a pipe whose writer has exited.
    private static func drain(_ descriptor: Int32) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return bytes }
            bytes += chunk[..<count]
        }
    }
}

extension Binder {
    /// Seconds a driver unbind may take before vfioctl stops waiting and reports who holds the
    /// device (`VFIOCTL_UNBIND_TIMEOUT` overrides it).
    public static var unbindTimeout: Double {
        ProcessInfo.processInfo.environment["VFIOCTL_UNBIND_TIMEOUT"].flatMap(Double.init).flatMap { $0 > 0 && $0 <= 3600 ? $0 : nil } ?? 10
    }

    /// Unbinds the device's driver. On the live kernel the write runs in a child process
    /// (`BoundedWrite`, as every write): a driver's remove that waits for a user (vfio-pci for a VM with the
    /// device open) is given up after `unbindTimeout` with the processes that hold the device
    /// named; the write finishes by itself once they let go, and the journal (marked before
    /// this is called) says the change is in progress, so `vfioctl restore` completes it. In
    /// tests, through the emulated kernel like every other write.
    func unbindDriver(_ address: PCIAddress) throws(BindingError) {
        let path = devicePath(address) + "/driver/unbind"
        let driver = try? self.driver(of: address)
        let timeout = Self.unbindTimeout
        do { try write(address.description, to: path, timeout: timeout) } catch {
            guard case .sysfsTimeout(_, _, _, let pending) = error else { throw error }
            var holders: [Holder] = []
            if root.isSystem {
                holders = HolderReader(sysfs: root).holders(of: [address], leavingVFIO: driver.map(GroupViability.isVFIODriver) ?? false)[address] ?? []
            }
            let waitingFor = holders.isEmpty ? "a user of the device vfioctl cannot see"
                : holders.map(\.description).joined(separator: "; ")
            throw .sysfsTimeout(path: path, value: address.description, seconds: timeout,
                                state: "the \(driver ?? "device's") driver's remove waits for \(waitingFor); the unbind finishes by itself once they let go (\(pending))")
        }
    }
}
