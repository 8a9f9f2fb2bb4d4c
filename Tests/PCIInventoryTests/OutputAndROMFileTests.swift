import Foundation
import SysfsFixtures
import Testing

/// Issue 20: `cdi --output` and `rom dump --output` never replace what is not a regular file,
/// `-` is stdout; `rom` never blocks on a FIFO, never writes a copied tree, never leaves its root.
@Suite struct OutputAndROMFileTests {
    func scratch() throws -> String {
        let path = NSTemporaryDirectory() + "vfioctl-out-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func cdiOutputIsANewOrRegularFileOrStdout() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let dir = try scratch()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let base = ["cdi", "--sysfs-root", tree.rootPath, "--output"]
            let stdout = try VfioctlBinary.run(base + ["-"])
            #expect(stdout.status == 0 && stdout.stdout.contains("\"cdiVersion\""), "\(stdout.stderr)")
            // A symlink (as /dev/stdout is) and a FIFO are refused and stay what they were.
            try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: dir + "/target")
            #expect(mkfifo(dir + "/fifo", 0o600) == 0)
            for name in ["link", "fifo"] {
                let started = Date()
                let result = try VfioctlBinary.run(base + [dir + "/" + name])
                #expect(result.status == 1 && result.stderr.contains("replaces only regular files"), "\(name): \(result.stderr)")
                #expect(Date().timeIntervalSince(started) < 5)
            }
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/link") == dir + "/target")
            #expect(!FileManager.default.fileExists(atPath: dir + "/target"))
            #expect(try FileManager.default.attributesOfItem(atPath: dir + "/fifo")[.type] as? FileAttributeType == .typeUnknown
                    || (try FileManager.default.attributesOfItem(atPath: dir + "/fifo")[.type] as? FileAttributeType) != .typeRegular)
            // A character device node (root only: mknod) is never replaced.
            if getuid() == 0 {
                #expect(mknod(dir + "/null", S_IFCHR | 0o666, nullDevice()) == 0)
                let result = try VfioctlBinary.run(base + [dir + "/null"])
                #expect(result.status == 1 && result.stderr.contains("character device"), "\(result.stderr)")
                var status = stat()
                #expect(lstat(dir + "/null", &status) == 0 && status.st_mode & S_IFMT == S_IFCHR)
            }
            // A regular file is replaced whole, and no temporary file stays.
            try Data("old".utf8).write(to: URL(fileURLWithPath: dir + "/spec.json"))
            #expect(try VfioctlBinary.run(base + [dir + "/spec.json"]).status == 0)
            #expect(try String(contentsOfFile: dir + "/spec.json", encoding: .utf8).contains("cdiVersion"))
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["fifo", "link"] + (getuid() == 0 ? ["null"] : []) + ["spec.json"])
        }
    }

    @Test func romFileThatIsNotARegularFileIsAClearErrorAtOnce() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(mkfifo(dir + "/fifo", 0o600) == 0)
        for (path, words) in [(dir + "/fifo", "FIFO"), (dir, "directory"), (dir + "/missing", "No such file")] {
            let started = Date()
            let result = try VfioctlBinary.run(["rom", "check", "--file", path])
            #expect(result.status == 1 && result.stderr.contains(words), "\(path): \(result.stderr)")
            #expect(Date().timeIntervalSince(started) < 5)
        }
    }

    /// On a copied tree the `rom` file is read as it is: its 55 AA signature is never
    /// overwritten by the enable bit, and a symlink out of the tree is refused.
    @Test func copiedTreeROMIsReadOnlyAndConfined() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let rom = tree.rootPath + "/bus/pci/devices/0000:01:00.0/rom"
            try? FileManager.default.removeItem(atPath: rom)
            try Data(FixtureROMs.multiImage).write(to: URL(fileURLWithPath: rom))
            let checked = try VfioctlBinary.run(["rom", "check", "01:00.0", "--sysfs-root", tree.rootPath])
            #expect(checked.status == 0, "\(checked.stdout)\(checked.stderr)")
            #expect(try Array(Data(contentsOf: URL(fileURLWithPath: rom))) == FixtureROMs.multiImage)
            let outside = tree.rootPath + "-outside"
            try Data("IMPORTANT-CONFIG".utf8).write(to: URL(fileURLWithPath: outside))
            defer { try? FileManager.default.removeItem(atPath: outside) }
            try FileManager.default.removeItem(atPath: rom)
            try FileManager.default.createSymbolicLink(atPath: rom, withDestinationPath: outside)
            for command in [["rom", "check", "01:00.0"], ["rom", "dump", "01:00.0", "--output", tree.rootPath + "-dump"]] {
                let result = try VfioctlBinary.run(command + ["--sysfs-root", tree.rootPath])
                #expect(result.status == 1 && result.stderr.contains("outside its root"), "\(result.stderr)")
            }
            #expect(try String(contentsOfFile: outside, encoding: .utf8) == "IMPORTANT-CONFIG")
            #expect(!FileManager.default.fileExists(atPath: tree.rootPath + "-dump"))
            try FileManager.default.removeItem(atPath: rom)
            #expect(mkfifo(rom, 0o600) == 0)
            let started = Date()
            let fifo = try VfioctlBinary.run(["rom", "check", "01:00.0", "--sysfs-root", tree.rootPath])
            #expect(fifo.status == 1 && fifo.stderr.contains("FIFO"), "\(fifo.stderr)")
            #expect(Date().timeIntervalSince(started) < 5)
        }
    }
}

/// /dev/null's device number, for a character device node planted by mknod.
private func nullDevice() -> dev_t {
    var status = stat()
    return stat("/dev/null", &status) == 0 ? status.st_rdev : 0
}
