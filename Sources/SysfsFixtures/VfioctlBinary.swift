import Foundation

/// Runs the built `vfioctl` binary as a user would, for tests that check the CLI end to end on
/// fixture trees. The binary sits next to the test bundle in the build folder
/// (`swift build --build-tests` builds both).
public enum VfioctlBinary {
    public struct NotBuilt: Error, CustomStringConvertible {
        public var description: String { "vfioctl binary not found next to the tests: run `swift build --build-tests` first" }
    }

    public struct Result: Sendable {
        public let status: Int32
        public let stdout: String
        public let stderr: String
        /// The run outlived the timeout it was given and was killed (SIGKILL).
        public var timedOut = false
    }

    public static var url: URL? {
        var directory = URL(fileURLWithPath: CommandLine.arguments.first ?? "").deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("vfioctl")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        for bundle in Bundle.allBundles {
            let candidate = bundle.bundleURL.deletingLastPathComponent().appendingPathComponent("vfioctl")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return nil
    }

    /// Runs vfioctl with `arguments`; the caller's VFIOCTL_SYSFS_ROOT is dropped so only what
    /// the test passes decides the tree, and `environment` is added.
    public static func run(_ arguments: [String], environment: [String: String] = [:], timeout: Double? = nil) throws -> Result {
        guard let binary = url else { throw NotBuilt() }
        return try runProgram(binary, arguments, environment: environment, removing: ["VFIOCTL_SYSFS_ROOT"], timeout: timeout)
    }

    /// Runs any program to completion with this process's environment, less `removing`, plus
    /// `environment`; returns its status and output. With `timeout`, a run still going after that
    /// many seconds is killed and reported as `timedOut`, so a test of a hang cannot hang.
    public static func runProgram(_ executable: URL, _ arguments: [String], environment: [String: String] = [:],
                                  removing: [String] = [], timeout: Double? = nil) throws -> Result {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for key in removing { env.removeValue(forKey: key) }
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let watchdog = Watchdog(pid: process.processIdentifier)
        if let timeout { watchdog.arm(after: timeout) }
        // Read both pipes before waiting so a large output cannot block the child.
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self),
                      timedOut: watchdog.finish())
    }
}

/// Kills a child that outlives its time; `finish()` disarms it and says whether it fired.
final class Watchdog: @unchecked Sendable {
    // Guarded by `lock`: the timer thread and the waiting thread both touch them.
    private let lock = NSLock()
    private let pid: Int32
    private var done = false
    private var fired = false

    init(pid: Int32) { self.pid = pid }

    func arm(after seconds: Double) {
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { [self] in
            lock.withLock {
                guard !done else { return }
                fired = true
                kill(pid, SIGKILL)
            }
        }
    }

    func finish() -> Bool {
        lock.withLock {
            done = true
            return fired
        }
    }
}
