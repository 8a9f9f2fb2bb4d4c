import Foundation
import SysfsFixtures
import Testing

/// The README's exit-code table, command by command, with bad values: 64 for a value the
/// command line gets wrong (before anything is read; a malformed address too), 1 for a failure
/// (an unknown device, an unreadable tree). Run on a fixture tree, so no command reaches VFIO.
@Suite("Exit statuses for bad values")
struct BadValueExitStatusTests {
    /// Runs vfioctl under `timeout`, so a hang is a failure (status 124) instead of a stuck suite.
    static func run(_ arguments: [String]) throws -> VfioctlBinary.Result {
        let binary = try #require(VfioctlBinary.url, "run `swift build --build-tests` first")
        return try VfioctlBinary.runProgram(URL(fileURLWithPath: "/usr/bin/timeout"), ["20", binary.path] + arguments, removing: ["VFIOCTL_SYSFS_ROOT"])
    }

    static let usage: [[String]] = [
        ["no-such-command"],
        ["show", "zz:00.0"],
        ["list", "--no-such-option"],
        ["show"],
        ["bar", "plan", "01:00.0", "--bar", "9"],
        ["bar", "plan", "01:00.0", "--bar=-1"],
        ["bar", "plan", "01:00.0", "--skew", "0xfffffffffffff000"],
        ["bar", "plan", "01:00.0", "--skew", "100"],
        ["bar", "plan", "01:00.0", "--bar", "0", "--offset", "0xfffffffffffff000"],
        ["bar", "plan", "01:00.0", "--bar", "0", "--length", "0"],
        ["bar", "touch", "01:00.0", "--bar", "0", "--skew", "0xfffffffffffff000"],
        ["bar", "touch", "01:00.0", "--bar", "0", "--pattern", "zigzag"],
        ["bar", "touch", "01:00.0", "--bar", "6"],
        ["bar", "toggle", "01:00.0", "--bar=-1"],
        ["bar", "toggle", "01:00.0", "--bar", "0", "--offset", "zz"],
        ["bar", "read", "01:00.0", "--bar", "9"],
        ["bar", "read", "01:00.0", "--bar", "0", "--width", "3"],
        ["bar", "read", "01:00.0", "--bar", "0", "--offset", "0xffffffffffffffff"],
        ["bar", "write", "01:00.0", "--bar", "0", "0x1ffffffff"],
        ["bar", "config", "01:00.0", "--count", "3"],
        ["bar", "config", "01:00.0", "--count", "-4"],
        ["dma", "check", "01:00.0", "--size", "0xfffffffffffff000"],
        ["dma", "check", "01:00.0", "--size", "100"],
        ["dma", "check", "01:00.0", "--chunks", "3"],
        ["dma", "bench", "01:00.0", "--size", "3M"],
        ["dma", "bench", "01:00.0", "--repeat", "0"],
        ["doctor", "--vm-memory", "lots"],
        ["doctor", "--vm-memory", "99999999999T"],
        ["irq", "test", "01:00.0", "--index", "nmi"],
        ["irq", "test", "01:00.0", "--index", "msi", "--vectors", "0"],
    ]

    static let failures: [[String]] = [
        ["show", "42:00.0"],
        ["bar", "plan", "01:00.0", "--bar", "2"],
        ["bar", "plan", "01:00.0", "--bar", "5"],
        ["bar", "plan", "01:00.0", "--bar", "0", "--offset", "1G", "--length", "1G"],
    ]

    /// The lab's probe tool (built beside vfioctl) refuses bad values the same way.
    static let probeUsage: [[String]] = [
        ["p2p", "01:00.0", "--peer", "02:00.0", "--bar", "7"],
        ["p2p", "01:00.0", "--peer", "02:00.0", "--bar", "2", "--offset", "0xfffffffffffff000"],
        ["irq-test", "01:00.0", "--index", "nmi"],
        ["vm-dma-smoke", "01:00.0", "--bytes", "4096"],
        ["vm-smoke", "zz:00.0"],
    ]

    @Test(arguments: probeUsage)
    func probeUsageErrorsExit64(_ arguments: [String]) throws {
        let vfioctl = try #require(VfioctlBinary.url, "run `swift build --build-tests` first")
        let probe = vfioctl.deletingLastPathComponent().appendingPathComponent("vfioctl-lab-probe")
        let result = try VfioctlBinary.runProgram(URL(fileURLWithPath: "/usr/bin/timeout"), ["20", probe.path] + arguments, removing: [])
        #expect(result.status == 64, "\(arguments): \(result.status) \(result.stderr)")
        #expect(!result.stderr.isEmpty)
    }

    @Test(arguments: usage)
    func usageErrorsExit64(_ arguments: [String]) throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let result = try Self.run(arguments + ["--sysfs-root", tree.rootPath])
            #expect(result.status == 64, "\(arguments): \(result.status) \(result.stderr)")
            #expect(!result.stderr.isEmpty)
            #expect(result.stdout.isEmpty)
        }
    }

    @Test(arguments: failures)
    func failuresExit1(_ arguments: [String]) throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let result = try Self.run(arguments + ["--sysfs-root", tree.rootPath])
            #expect(result.status == 1, "\(arguments): \(result.status) \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        }
    }

    @Test(arguments: [["list"], ["groups"], ["show", "01:00.0"], ["bar", "plan", "01:00.0"], ["doctor"]])
    func unreadableTreeExits1(_ arguments: [String]) throws {
        let result = try Self.run(arguments + ["--sysfs-root", "/nonexistent-vfioctl-root"])
        #expect(result.status == 1, "\(arguments): \(result.status) \(result.stderr)")
    }

    @Test func unreadableDeviceDirectoryMakesItsGroupNotViable() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            // The GPU's audio function (group 8, both on vfio-pci): its directory becomes a
            // plain file, so nothing about it (its driver included) can be read.
            let link = tree.rootPath + "/bus/pci/devices/0000:01:00.1"
            let directory = try FileManager.default.destinationOfSymbolicLink(atPath: link)
            let target = URL(fileURLWithPath: directory, relativeTo: URL(fileURLWithPath: tree.rootPath + "/bus/pci/devices/")).standardizedFileURL.path
            try FileManager.default.removeItem(atPath: target)
            try Data("not a directory\n".utf8).write(to: URL(fileURLWithPath: target))
            let result = try Self.run(["groups", "--json", "--sysfs-root", tree.rootPath])
            #expect(result.status == 0, "\(result.stderr)")
            let groups = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
            let gpu = try #require(groups.first { $0["group"] as? Int == 8 })
            #expect(gpu["viable"] as? Bool == false, "\(gpu)")
            let blockers = try #require(gpu["blockers"] as? [[String: Any]])
            #expect(blockers.contains { ($0["reason"] as? String)?.contains("its driver cannot be read") == true }, "\(blockers)")
        }
    }

    @Test(arguments: [["list"], ["groups"], ["show", "01:00.0"], ["doctor"]])
    func fifoInTheTreeDoesNotHang(_ arguments: [String]) throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            // FIFOs where attributes and kernel facts should be: opening one for reading
            // blocks until a writer comes, which never happens here.
            let device = tree.rootPath + "/bus/pci/devices/0000:01:00.0"
            for attribute in ["vendor", "resource", "config", "numa_node"] {
                try? FileManager.default.removeItem(atPath: device + "/" + attribute)
                #expect(mkfifo(device + "/" + attribute, 0o600) == 0)
            }
            try? FileManager.default.createDirectory(atPath: tree.rootPath + "/kernel/mm/transparent_hugepage", withIntermediateDirectories: true)
            try? FileManager.default.removeItem(atPath: tree.rootPath + "/kernel/mm/transparent_hugepage/enabled")
            #expect(mkfifo(tree.rootPath + "/kernel/mm/transparent_hugepage/enabled", 0o600) == 0)
            let result = try Self.run(arguments + ["--sysfs-root", tree.rootPath])
            #expect(result.status != 124, "\(arguments) hung on a FIFO")
            #expect(result.status == 0 || (arguments == ["doctor"] && result.status == 2), "\(arguments): \(result.status) \(result.stderr)")
        }
    }

    @Test func hugePageDirectoryWithAnImpossibleSizeIsSkipped() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            // A page size of 2^64 bytes or more (kB times 1024 overflows): skipped, not trapped on.
            let directory = tree.rootPath + "/kernel/mm/hugepages/hugepages-99999999999999999kB"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try Data("4\n".utf8).write(to: URL(fileURLWithPath: directory + "/nr_hugepages"))
            let result = try Self.run(["doctor", "--json", "--sysfs-root", tree.rootPath])
            #expect(result.status == 0 || result.status == 2, "\(result.status) \(result.stderr)")
            #expect(!result.stdout.contains("99999999999999999"))
        }
    }
}
