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
    public static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        guard let binary = url else { throw NotBuilt() }
        return try runProgram(binary, arguments, environment: environment, removing: ["VFIOCTL_SYSFS_ROOT"])
    }

    /// Runs any program to completion with this process's environment, less `removing`, plus
    /// `environment`; returns its status and output.
    public static func runProgram(_ executable: URL, _ arguments: [String], environment: [String: String] = [:],
                                  removing: [String] = []) throws -> Result {
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
        // Read both pipes before waiting so a large output cannot block the child.
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }
}
