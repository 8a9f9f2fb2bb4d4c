import Foundation
import SysfsFixtures
import Testing

/// `vfioctl bar plan` on fixture sysfs trees: no root, no VFIO, only `resource` files.
@Suite("bar plan CLI on fixture trees")
struct BARPlanCLITests {
    func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let result = try VfioctlBinary.run(arguments)
        return (result.status, result.stdout, result.stderr)
    }

    func planJSON(_ root: String, _ extra: [String]) throws -> [[String: Any]] {
        let result = try run(["bar", "plan", "01:00.0", "--sysfs-root", root, "--json"] + extra)
        #expect(result.status == 0, "\(result.stderr)")
        let parsed = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
        return try #require(parsed as? [[String: Any]])
    }

    @Test func plansEveryMemoryBARAndSkipsIOBARs() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let plans = try planJSON(tree.rootPath, [])
            #expect(plans.compactMap { $0["bar"] as? Int } == [0, 1, 3])
            let bar1 = try #require(plans.first { $0["bar"] as? Int == 1 })
            #expect(bar1["start"] as? UInt64 == 0xc000_0000)
            #expect(bar1["alignment"] as? UInt64 == 2 << 20)        // 256 MiB: no 1 GiB page fits
            #expect(bar1["minimum_mapping_count"] as? UInt64 == 128)
            let placements = try #require(bar1["placements"] as? [[String: Any]])
            #expect(placements.compactMap { $0["label"] as? String } == ["vfioctl", "page-aligned", "size-aligned"])
            #expect(placements[0]["reaches_minimum"] as? Bool == true)
            #expect(placements[1]["never_huge"] as? Bool == true)
            let pageAligned = try #require(placements[1]["fixed"] as? [String: Any])
            #expect(pageAligned["faults"] as? UInt64 == 65536)
            let result = try run(["bar", "plan", "01:00.0", "--sysfs-root", tree.rootPath])
            #expect(result.stderr.contains("BAR 5 is an I/O-port BAR"))
            #expect(result.stdout.contains("0000:01:00.0 BAR 1: 0xc0000000, 256 MiB"))
            #expect(result.stdout.contains("fewest mappings possible: 128 (128 x 2 MiB)"))
        }
    }

    @Test func skewAddsAPlacement() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let plans = try planJSON(tree.rootPath, ["--bar", "3", "--skew", "2M"])
            #expect(plans.count == 1)
            let placements = try #require(plans.first?["placements"] as? [[String: Any]])
            let skewed = try #require(placements.last)
            #expect(skewed["label"] as? String == "vfioctl+skew")
            #expect(skewed["skew"] as? UInt64 == 2 << 20)
            // 32 MiB at a 2 MiB multiple: 16 PMD mappings either way.
            #expect((skewed["fixed"] as? [String: Any])?["mapping_count"] as? UInt64 == 16)
            #expect(skewed["reaches_minimum"] as? Bool == true)
        }
    }

    /// The host's THP facts decide what the kernel tries; `bar plan` says which rule applied.
    @Test func thpModeAndKernelDecideThePrediction() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            func plan(_ extra: [String]) throws -> [String: Any] {
                try #require(try planJSON(tree.rootPath, ["--bar", "1"] + extra).first)
            }
            func rule(_ plan: [String: Any], _ key: String = "huge_faults") -> String? { (plan[key] as? [String: Any])?["rule"] as? String }
            let never = try plan(["--thp", "never", "--kernel", "6.12.95"])
            #expect(rule(never) == "thp-never")
            #expect(never["minimum_mapping_count"] as? UInt64 == 65536)          // 256 MiB of 4 KiB pages
            #expect(never["alignment"] as? UInt64 == 2 << 20)                    // still placed for 2 MiB
            let madvise = try plan(["--thp", "madvise", "--kernel", "6.12.95"])
            #expect(rule(madvise) == "thp-madvise-advised")
            #expect(rule(madvise, "huge_faults_without_madvise") == "thp-madvise-not-advised")
            #expect(madvise["minimum_mapping_count"] as? UInt64 == 128)
            let qemu = try plan(["--thp", "madvise", "--kernel", "6.12.95", "--no-madvise"])
            #expect(rule(qemu) == "thp-madvise-not-advised")
            #expect(qemu["minimum_mapping_count"] as? UInt64 == 65536)
            let newer = try plan(["--thp", "never", "--kernel", "7.3.4"])
            #expect(rule(newer) == "thp-mode-bypassed")
            #expect(newer["minimum_mapping_count"] as? UInt64 == 128)
            let disabled = try plan(["--thp", "always", "--kernel", "7.3.4", "--process-thp", "disabled"])
            #expect(rule(disabled) == "prctl-thp-disabled")
            // A copied tree that does not say its mode: planned as if huge faults are tried.
            let unknown = try plan(["--kernel", "6.12.95"])
            #expect(rule(unknown) == "thp-mode-unknown")
            #expect((unknown["huge_faults"] as? [String: Any])?["thp_mode"] is NSNull)
            let text = try run(["bar", "plan", "01:00.0", "--sysfs-root", tree.rootPath, "--bar", "1", "--thp", "madvise", "--kernel", "6.12.95"])
            #expect(text.stdout.contains("huge faults tried [thp-madvise-advised]"))
            #expect(text.stdout.contains("without MADV_HUGEPAGE (QEMU's BAR mappings): huge faults refused [thp-madvise-not-advised]"))
            let bad = try run(["bar", "plan", "01:00.0", "--sysfs-root", tree.rootPath, "--thp", "sometimes"])
            #expect(bad.status == 64)
            let badKernel = try run(["bar", "plan", "01:00.0", "--sysfs-root", tree.rootPath, "--kernel", "linux"])
            #expect(badKernel.status == 64)
        }
    }

    @Test func badInputIsAClearError() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let io = try run(["bar", "plan", "01:00.0", "--sysfs-root", tree.rootPath, "--bar", "5"])
            #expect(io.status != 0)
            #expect(io.stderr.contains("I/O-port BAR: it cannot be mmapped"))
            let missing = try run(["bar", "plan", "01:00.0", "--sysfs-root", tree.rootPath, "--bar", "2"])
            #expect(missing.status != 0)
            #expect(missing.stderr.contains("has no BAR 2 (its BARs: 0 (mem), 1 (mem), 3 (mem), 5 (io))"))
            let skew = try run(["bar", "plan", "01:00.0", "--sysfs-root", tree.rootPath, "--skew", "100"])
            #expect(skew.status != 0)
            #expect(skew.stderr.contains("multiple of 4096"))
            let device = try run(["bar", "plan", "42:00.0", "--sysfs-root", tree.rootPath])
            #expect(device.status != 0)
            #expect(device.stderr.contains("no PCI device 0000:42:00.0"))
        }
    }

    @Test func handMadeResourceOfA2GiBBar() throws {
        // No fixture builder needed: a `resource` file is all `bar plan` reads.
        let root = NSTemporaryDirectory() + "vfioctl-plan-\(getpid())"
        let directory = root + "/bus/pci/devices/0000:00:03.0"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let zero = "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
        let resource = "0x00000000fea01000 0x00000000fea01fff 0x0000000000040200\n" + zero
            + "0x0000000180000000 0x00000001ffffffff 0x000000000014220c\n" + String(repeating: zero, count: 4)
        try resource.write(toFile: directory + "/resource", atomically: true, encoding: .utf8)
        for (name, value) in [("vendor", "0x1af4"), ("device", "0x1110"), ("class", "0x050000")] {
            try (value + "\n").write(toFile: directory + "/" + name, atomically: true, encoding: .utf8)
        }
        let result = try run(["bar", "plan", "00:03.0", "--sysfs-root", root, "--bar", "2", "--skew", "4K"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("fewest mappings possible: 2 (2 x 1 GiB)"))
        #expect(result.stdout.contains("18:inserted x2"))
        #expect(result.stdout.contains("0:inserted x524288 9:fallback x2050 18:fallback x3"))
        #expect(result.stdout.contains("note: vfioctl+skew never gets huge pages"))
    }
}
