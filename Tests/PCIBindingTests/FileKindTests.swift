import Foundation
import SysfsFixtures
import Testing

/// Issue 20, the class made testable: every path of `FileSafetyTable` tried as every kind of
/// wrong file. Each case: the documented exit status, within a second of the ordinary run,
/// nothing written outside the roots, no temporary file left, a planted file never replaced.
/// "Unreadable" is a mode-000 file read without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (setpriv
/// drops them from the bounding set, so root really cannot read it); "read-only mount" bind-mounts
/// the file's directory read-only in a private mount namespace (unshare -m). Both, and the
/// character device (mknod), need root: without it those cases are skipped and say so.
@Suite(.serialized) struct FileKindTests {
    static let isRoot = getuid() == 0

    struct Case {
        let base = NSTemporaryDirectory() + "vfioctl-kinds-\(UUID().uuidString)"
        let tree: TemporarySysfsTree

        init(_ host: FixtureHost) throws {
            tree = try TemporarySysfsTree.create(host)
            for name in ["proc", "state", "rules", "config", "out", "in", "outside"] {
                try FileManager.default.createDirectory(atPath: base + "/" + name, withIntermediateDirectories: true)
            }
            // A host's mount table, the evidence bind and persist add need (the mountinfo entry
            // plants its own kinds over it).
            try HostEnvironment.writeMountTable(procRoot: base + "/proc")
            try Data("SENTINEL".utf8).write(to: URL(fileURLWithPath: sentinel))
        }

        var sentinel: String { base + "/outside/sentinel" }

        func directory(_ place: FileSafetyTable.Place) -> String {
            switch place {
            case .sysfs: tree.rootPath
            case .proc: base + "/proc"
            case .state: base + "/state"
            case .rules: base + "/rules"
            case .config: base + "/config"
            case .output: base + "/out"
            case .input: base + "/in"
            }
        }

        func arguments(_ entry: FileSafetyTable.Entry) -> [String] {
            entry.arguments.map { argument in
                var text = argument
                for place in [FileSafetyTable.Place.sysfs, .proc, .state, .rules, .config, .output, .input] {
                    text = text.replacingOccurrences(of: place.rawValue, with: directory(place))
                }
                return text
            }
        }

        func remove() {
            try? tree.remove()
            try? FileManager.default.removeItem(atPath: base)
        }

        /// Every path under the case's directories and the tree, for the leftover check.
        func allPaths() -> [String] {
            [base, tree.rootPath].flatMap { root in
                (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []).map { root + "/" + $0 }
            }
        }
    }

    static func kind(_ path: String) -> mode_t? {
        var status = stat()
        return lstat(path, &status) == 0 ? status.st_mode & S_IFMT : nil
    }

    /// Puts `planted` at `path`; returns the prefix to run vfioctl under, or a reason to skip.
    static func plant(_ planted: FileSafetyTable.Planted, at path: String, entry: FileSafetyTable.Entry, in context: Case) throws -> Result<[String], SkipReason> {
        let manager = FileManager.default
        let parent = (path as NSString).deletingLastPathComponent
        try manager.createDirectory(atPath: parent, withIntermediateDirectories: true)
        if kind(path) != nil { try manager.removeItem(atPath: path) }
        switch planted {
        case .fifo:
            #expect(mkfifo(path, 0o600) == 0)
        case .directory:
            try manager.createDirectory(atPath: path, withIntermediateDirectories: false)
        case .characterDevice:
            guard isRoot else { return .failure(SkipReason("mknod needs root")) }
            #expect(mknod(path, S_IFCHR | 0o666, nullDevice()) == 0)
        case .symlinkOutOfRoot:
            if let ordinary = entry.ordinary { try Data(ordinary).write(to: URL(fileURLWithPath: context.sentinel)) }
            try manager.createSymbolicLink(atPath: path, withDestinationPath: context.sentinel)
        case .unreadable:
            try Data(entry.ordinary ?? Array("someone else's\n".utf8)).write(to: URL(fileURLWithPath: path))
            #expect(chmod(path, 0) == 0)
            if isRoot { return .success(["/usr/bin/setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]) }
        case .readOnlyMount:
            guard isRoot else { return .failure(SkipReason("a read-only bind mount needs root")) }
            if let ordinary = entry.ordinary { try Data(ordinary).write(to: URL(fileURLWithPath: path)) }
            let script = "mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro \"$1\" && shift && exec \"$@\""
            return .success(["/usr/bin/unshare", "-m", "/bin/sh", "-c", script, "sh", parent])
        case .missing:
            break
        case .oversized:
            let size = 17 << 20
            #expect(manager.createFile(atPath: path, contents: Data(count: size)))
        }
        return .success([])
    }

    struct SkipReason: Error { let text: String; init(_ text: String) { self.text = text } }

    func run(_ prefix: [String], _ arguments: [String]) throws -> (VfioctlBinary.Result, Double) {
        let started = Date()
        let result: VfioctlBinary.Result
        if prefix.isEmpty {
            result = try VfioctlBinary.run(arguments, timeout: 20)
        } else {
            let binary = try #require(VfioctlBinary.url).path
            result = try VfioctlBinary.runProgram(URL(fileURLWithPath: prefix[0]), Array(prefix.dropFirst()) + [binary] + arguments,
                                                  removing: ["VFIOCTL_SYSFS_ROOT"], timeout: 20)
        }
        return (result, Date().timeIntervalSince(started))
    }

    /// One vfioctl run per case and one ordinary run per entry, on fresh fixture trees: minutes
    /// on a loaded 2-core machine, so it runs when asked (VFIOCTL_FILE_KIND_TESTS=1 swift test
    /// --filter FileKindTests); Tests/run-all asks.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["VFIOCTL_FILE_KIND_TESTS"] == "1",
                   "slow (a vfioctl run per case): set VFIOCTL_FILE_KIND_TESTS=1 to run it"),
          arguments: FileSafetyTable.entries.indices)
    func everyKindOfFileAtThisPath(index: Int) throws {
        let entry = FileSafetyTable.entries[index]
        // The ordinary run: its status and time are the reference.
        let ordinaryCase = try Case(entry.host)
        defer { ordinaryCase.remove() }
        let ordinaryPath = ordinaryCase.directory(entry.place) + "/" + entry.path
        if let ordinary = entry.ordinary {
            try FileManager.default.createDirectory(atPath: (ordinaryPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(ordinary).write(to: URL(fileURLWithPath: ordinaryPath))
        }
        let (ordinary, ordinarySeconds) = try run([], ordinaryCase.arguments(entry))
        #expect(!ordinary.timedOut, "\(entry.name): the ordinary run timed out")
        var skipped: [String] = []
        for planted in FileSafetyTable.Planted.allCases {
            let context = try Case(entry.host)
            defer { context.remove() }
            let path = context.directory(entry.place) + "/" + entry.path
            let label = "\(entry.name) as \(planted.rawValue)"
            let prefix: [String]
            switch try Self.plant(planted, at: path, entry: entry, in: context) {
            case .success(let value): prefix = value
            case .failure(let reason):
                skipped.append("\(planted.rawValue): \(reason.text)")
                continue
            }
            let before = Self.kind(path)
            let target = planted == .symlinkOutOfRoot ? try? FileManager.default.destinationOfSymbolicLink(atPath: path) : nil
            let (result, seconds) = try run(prefix, context.arguments(entry))
            let expected: Int32
            switch entry.expected[planted] ?? .asOrdinary {
            case .status(let status): expected = status
            case .asOrdinary: expected = ordinary.status
            }
            #expect(!result.timedOut, "\(label): hung")
            #expect(result.status == expected, "\(label): exit \(result.status), expected \(expected): \(result.stderr)")
            #expect(seconds < ordinarySeconds + 1, "\(label): \(seconds) s against \(ordinarySeconds) s for the ordinary file")
            if result.status == 1 { #expect(!result.stderr.isEmpty, "\(label): exit 1 with no reason") }
            #expect(!result.stderr.contains("NSCocoaErrorDomain"), "\(label): \(result.stderr)")
            // Nothing outside the roots.
            let outside = try FileManager.default.contentsOfDirectory(atPath: context.base + "/outside")
            #expect(outside == ["sentinel"], "\(label): \(outside)")
            let sentinel = try Data(contentsOf: URL(fileURLWithPath: context.sentinel))
            #expect(sentinel == Data(entry.ordinary ?? Array("SENTINEL".utf8)) || (planted != .symlinkOutOfRoot && sentinel == Data("SENTINEL".utf8)), "\(label): the file outside changed")
            // Nothing half-written.
            let temporaries = context.allPaths().filter { $0.contains(".vfioctl-") || $0.hasSuffix(".tmp") }
            #expect(temporaries.isEmpty, "\(label): \(temporaries)")
            // A planted file is never replaced.
            if entry.writes, planted != .missing, planted != .readOnlyMount, planted != .oversized, planted != .unreadable {
                #expect(Self.kind(path) == before, "\(label): replaced")
                if let target { #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: path)) == target) }
            }
            // All or nothing: a failed early-binding change leaves none of its files.
            if entry.place == .config, result.status != 0 {
                for other in ["etc/modprobe.d/vfioctl-early.conf", "etc/initramfs-tools/hooks/vfioctl-early",
                              "etc/initramfs-tools/scripts/init-top/00-vfioctl-early", "etc/vfioctl/early-binding.json"] where other != entry.path {
                    #expect(Self.kind(context.directory(.config) + "/" + other) == nil, "\(label): left \(other)")
                }
            }
        }
        if !skipped.isEmpty { print("FileKindTests: \(entry.name): skipped (not root): \(skipped.joined(separator: "; "))") }
    }

    /// The command reference (docs/commands.md) says how many cases there are.
    @Test func theReadmeStatesTheCaseCount() throws {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/commands.md")
        let text = try String(contentsOf: readme, encoding: .utf8)
        #expect(text.contains("It covers \(FileSafetyTable.caseCount) cases"), "docs/commands.md must say: It covers \(FileSafetyTable.caseCount) cases")
    }
}

/// /dev/null's device number, for a character device node planted by mknod.
private func nullDevice() -> dev_t {
    var status = stat()
    return stat("/dev/null", &status) == 0 ? status.st_rdev : 0
}
