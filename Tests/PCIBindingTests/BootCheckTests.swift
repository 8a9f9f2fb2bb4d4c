import Foundation
import SysfsFixtures
import Testing
@testable import PCIBinding
@testable import PCIInventory

@Suite struct BootCheckTests {
    let gpu = try! PCIAddress(parsing: "0000:01:00.0")

    func facts(_ change: (inout BootFacts) -> Void) -> BootFacts {
        var facts = BootFacts(address: gpu, id: "10de:2204")
        facts.nativeDriver = "nouveau"
        change(&facts)
        return facts
    }

    @Test func nothingBindsWithoutARuleOrIDs() {
        let (willBind, findings) = BootCheck.judge(facts { _ in })
        #expect(!willBind)
        #expect(findings.last?.text.contains("vfioctl persist add 0000:01:00.0") == true)
    }

    @Test func aRuleBindsAndTheNativeModuleIsJudged() {
        let plain = BootCheck.judge(facts { $0.udevRule = true })
        #expect(plain.willBind)
        #expect(plain.findings.contains { $0.status == .warning && $0.text.contains("softdep nouveau pre: vfio-pci") })
        let ordered = BootCheck.judge(facts { $0.udevRule = true; $0.softdepBeforeVFIO = ["nouveau"] })
        #expect(ordered.findings.allSatisfy { $0.status == .ok })
        let blacklisted = BootCheck.judge(facts { $0.udevRule = true; $0.blacklisted = ["nouveau"] })
        #expect(blacklisted.findings.contains { $0.text.contains("nouveau is blacklisted") })
        let builtIn = BootCheck.judge(facts { $0.udevRule = true; $0.nativeBuiltIn = true })
        #expect(builtIn.findings.contains { $0.status == .warning && $0.text.contains("built into the kernel") })
    }

    @Test func idsTakeEveryDeviceOfTheModel() {
        let alone = BootCheck.judge(facts { $0.vfioIDs = ["10de:2204"] })
        #expect(alone.willBind && alone.findings.first?.status == .ok)
        let twins = BootCheck.judge(facts { $0.vfioIDs = ["10de:2204"]; $0.sameModel = [try! PCIAddress(parsing: "0000:02:00.0")] })
        #expect(twins.willBind && twins.findings.first?.status == .warning)
        #expect(twins.findings.first?.text.contains("0000:02:00.0") == true)
        #expect(BootFactsReader.ids("ids=10DE:2204,10de:1aef:ffffffff:ffffffff,bogus,1:2") == ["10de:2204", "10de:1aef"])
    }

    @Test func theReaderAndTheCLIOnAFixture() throws {
        let tree = try TemporarySysfsTree.create(SplitSlotHost.fixture)
        let extra = tree.rootPath + "-etc"
        defer { try? tree.remove(); try? FileManager.default.removeItem(atPath: extra) }
        try FileManager.default.createDirectory(atPath: extra + "/modprobe.d", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: extra + "/proc", withIntermediateDirectories: true)
        try HostEnvironment.writeMountTable(procRoot: extra + "/proc")
        try "# comment\nsoftdep nouveau pre: vfio-pci\noptions vfio-pci ids=10de:1aef\nblacklist snd-hda-intel\n"
            .write(toFile: extra + "/modprobe.d/vfio.conf", atomically: true, encoding: .utf8)
        try "BOOT_IMAGE=/vmlinuz ro\n".write(toFile: extra + "/proc/cmdline", atomically: true, encoding: .utf8)
        let gpu = GPUWorkstation.gpu.description
        let base = ["--sysfs-root", tree.rootPath, "persist", "check", "--modprobe-dir", extra + "/modprobe.d",
                    "--proc-root", extra + "/proc", "--rules-dir", extra + "/rules", "--state-dir", extra + "/state"]
        let before = try VfioctlBinary.run(base + [gpu])
        #expect(before.status == 2, "\(before.stdout)\(before.stderr)")
        #expect(before.stdout.contains("does not bind"))
        _ = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "persist", "add", gpu, "--rules-dir", extra + "/rules"])
        let after = try VfioctlBinary.run(base + [gpu])
        #expect(after.status == 0)
        #expect(after.stdout.contains("softdep nouveau pre: vfio-pci: vfio-pci loads first"), "\(after.stdout)")
        // The audio function is taken by ids= and its driver is blacklisted.
        let audio = try VfioctlBinary.run(base + [GPUWorkstation.gpuAudio.description, "--json"])
        #expect(audio.status == 0, "\(audio.stdout)\(audio.stderr)")
        #expect(audio.stdout.contains("snd_hda_intel is blacklisted"))
    }
}
