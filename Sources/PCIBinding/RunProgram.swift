#if canImport(Glibc)
import Glibc
#endif
import SystemCalls

/// Runs a helper program (modprobe, udevadm) and waits for it, with posix_spawn and waitpid.
/// Foundation's Process is not used: it waits through a CFRunLoop socket pair, which fails in
/// minimal environments such as an initramfs and then never reports the exit.
/// Returns the exit status, or -1 when the program could not be started or was killed.
func runProgram(_ path: String, _ arguments: [String], quiet: Bool = true) -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if quiet {
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    }
    // Contract: strdup'd C strings stay valid until freed after posix_spawn returns.
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    let spawned = argv.withUnsafeBufferPointer { buffer -> Int32 in
        guard let base = buffer.baseAddress else { return EINVAL }
        return posix_spawn(&pid, path, &actions, nil, base, environ)
    }
    guard spawned == 0 else { return -1 }
    var status: Int32 = 0
    guard case .success = SystemCall.retryingOnInterrupt({ waitpid(pid, &status, 0) }) else { return -1 }
    // WIFEXITED / WEXITSTATUS are macros Swift cannot import.
    let terminatingSignal = status & 0x7f
    return terminatingSignal == 0 ? (status >> 8) & 0xff : -1
}

/// The first existing executable among `candidates`.
func findProgram(_ candidates: [String]) -> String? {
    candidates.first { access($0, X_OK) == 0 }
}
