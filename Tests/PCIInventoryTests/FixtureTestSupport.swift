import Foundation
import SysfsFixtures
import Testing

/// Output of one finished process.
struct ProcessResult {
    var exitCode: Int32
    var standardOutput: String
    var standardError: String
}

enum FixtureTestSupport {
    /// `lspci` from PATH (or the usual Debian locations); nil when pciutils is missing.
    static let lspciPath: String? = {
        let searchPath = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let candidates = searchPath.split(separator: ":").map { "\($0)/lspci" } + ["/usr/bin/lspci", "/usr/sbin/lspci", "/sbin/lspci"]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    static func run(_ executable: String, _ arguments: [String]) throws -> ProcessResult {
        let result = try VfioctlBinary.runProgram(URL(fileURLWithPath: executable), arguments, environment: ["LC_ALL": "C"])
        return ProcessResult(exitCode: result.status, standardOutput: result.stdout, standardError: result.stderr)
    }

    /// Runs lspci against a fixture tree; records an issue and returns nil when lspci is not installed.
    static func lspci(_ tree: TemporarySysfsTree, _ options: [String]) throws -> ProcessResult? {
        guard let lspciPath else {
            Issue.record("lspci is not installed (Debian: apt-get install pciutils); the fixture realism checks need it")
            return nil
        }
        return try run(lspciPath, ["-A", "linux-sysfs", "-O", "sysfs.path=\(tree.pciBusPath)"] + options)
    }

    /// lspci's device lines (those that do not start with a tab), keyed by address.
    static func deviceLines(_ output: String) -> [FixtureAddress: String] {
        var lines: [FixtureAddress: String] = [:]
        for line in output.split(separator: "\n") where !line.hasPrefix("\t") {
            guard let addressText = line.split(separator: " ").first, let address = FixtureAddress(String(addressText)) else { continue }
            lines[address] = String(line)
        }
        return lines
    }

    /// `Kernel driver in use:` per device from `lspci -D -k`.
    static func kernelDrivers(_ output: String) -> [FixtureAddress: String] {
        var drivers: [FixtureAddress: String] = [:]
        var current: FixtureAddress?
        for line in output.split(separator: "\n") {
            if !line.hasPrefix("\t") {
                current = line.split(separator: " ").first.flatMap { FixtureAddress(String($0)) }
            } else if let current, line.hasPrefix("\tKernel driver in use: ") {
                drivers[current] = String(line.dropFirst("\tKernel driver in use: ".count))
            }
        }
        return drivers
    }

    static func readText(_ path: String) throws -> String {
        try String(contentsOfFile: path, encoding: .utf8)
    }

    static func readBytes(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Every symlink under `root` whose target does not exist, as paths relative to `root`.
    static func danglingSymlinks(under root: String) -> [String] {
        let fileManager = FileManager.default
        guard let enumerator = fileManager.enumerator(atPath: root) else { return ["<cannot enumerate \(root)>"] }
        var dangling: [String] = []
        while let relative = enumerator.nextObject() as? String {
            let path = root + "/" + relative
            guard let attributes = try? fileManager.attributesOfItem(atPath: path),
                  attributes[.type] as? FileAttributeType == .typeSymbolicLink else { continue }
            if !fileManager.fileExists(atPath: path) { dangling.append(relative) }
        }
        return dangling.sorted()
    }

    static func little16(_ bytes: [UInt8], _ offset: Int) -> UInt16 {
        UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    static func little32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(little16(bytes, offset)) | UInt32(little16(bytes, offset + 2)) << 16
    }

    /// Offset of an extended capability (walking the list from 0x100), or nil.
    static func extendedCapabilityOffset(_ config: [UInt8], id: UInt16) -> Int? {
        var offset = 0x100
        var hops = 0
        while offset >= 0x100, offset + 4 <= config.count, hops < 64 {
            let header = little32(config, offset)
            if header == 0 { return nil }
            if UInt16(header & 0xffff) == id { return offset }
            offset = Int(header >> 20)
            hops += 1
        }
        return nil
    }

    /// Offset of a standard capability (walking the list from 0x34), or nil.
    static func capabilityOffset(_ config: [UInt8], id: UInt8) -> Int? {
        var offset = Int(config[0x34])
        var hops = 0
        while offset >= 0x40, offset + 2 <= config.count, hops < 48 {
            if config[offset] == id { return offset }
            offset = Int(config[offset + 1])
            hops += 1
        }
        return nil
    }
}
