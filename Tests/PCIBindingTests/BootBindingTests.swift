import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SysfsFixtures
import Testing
@testable import PCIBinding
@testable import PCIInventory

private func bdf(_ text: String) -> PCIAddress { try! PCIAddress(parsing: text) }
private let gpuModel = PCIModelID(vendor: 0x10de, device: 0x2204)
private let audioModel = PCIModelID(vendor: 0x10de, device: 0x1aef)

@Suite struct BootBindingParserTests {
    @Test func kernelCommandLineForms() {
        let parsed = BootBindingParser.kernelCommandLine("BOOT_IMAGE=/vmlinuz root=/dev/sda1 quiet vfio-pci.ids=10de:2204,10de:1aef pci-stub.ids=8086:10d3 vfio_pci.ids=1af4:1110:ffffffff:ffffffff rd.driver.pre=vfio-pci,nvme\n", file: "/proc/cmdline")
        #expect(parsed.problems.isEmpty)
        #expect(parsed.sources.map(\.driver) == ["vfio-pci", "vfio-pci", "pci-stub", "vfio-pci"])
        #expect(parsed.sources.map(\.target) == [.model(gpuModel), .model(audioModel), .model(PCIModelID(vendor: 0x8086, device: 0x10d3)), .model(PCIModelID(vendor: 0x1af4, device: 0x1110))])
        #expect(parsed.sources.allSatisfy { $0.mechanism == .kernelCommandLine && $0.location == SourceLocation(file: "/proc/cmdline") })
        #expect(parsed.initramfsModules == ["vfio_pci", "nvme"])
    }

    @Test func malformedIDsNameTheEntryAndTheFile() {
        for bad in ["10de", "1:2", "10de:22g4", "10de:12345", ":2204", "10de:2204:zz", ""] {
            let parsed = BootBindingParser.kernelCommandLine("vfio-pci.ids=\(bad)", file: "/proc/cmdline")
            #expect(parsed.sources.isEmpty, "\(bad)")
            #expect(parsed.problems.count == 1, "\(bad)")
            #expect(parsed.problems.first?.description.hasPrefix("/proc/cmdline: ") == true)
            #expect(parsed.problems.first?.message.contains("ids=") == true)
        }
        // One bad entry does not hide the good ones.
        let mixed = BootBindingParser.modprobeConfiguration("\n# comment\noptions vfio-pci ids=10de:2204,nonsense\n", file: "/etc/modprobe.d/vfio.conf")
        #expect(mixed.sources.map(\.target) == [.model(gpuModel)])
        #expect(mixed.problems.map(\.description) == ["/etc/modprobe.d/vfio.conf:3: malformed ids= entry 'nonsense': each entry is VENDOR:DEVICE in hex (4 digits each), such as 10de:2204, optionally followed by :SUBVENDOR:SUBDEVICE:CLASS:CLASS_MASK"])
    }

    @Test func modprobeOptionsSoftdepsAndContinuations() {
        let text = """
            # vfio
            options vfio_pci disable_vga=1 ids="10de:2204"
            options pci-stub ids=8086:10d3
            options snd-hda-intel enable=1
            softdep nouveau pre: vfio-pci post: snd_hda_intel
            softdep drm \\
                pre: vfio_pci
              # indented comment
            blacklist nouveau
            """
        let parsed = BootBindingParser.modprobeConfiguration(text, file: "f.conf")
        #expect(parsed.problems.isEmpty)
        #expect(parsed.sources.map(\.location.line) == [2, 3])
        #expect(parsed.sources.map(\.driver) == ["vfio-pci", "pci-stub"])
        #expect(parsed.softdeps == [
            ModprobeSoftdep(module: "nouveau", pre: ["vfio_pci"], location: SourceLocation(file: "f.conf", line: 5)),
            ModprobeSoftdep(module: "drm", pre: ["vfio_pci"], location: SourceLocation(file: "f.conf", line: 6)),
        ])
    }

    @Test func driverctlOverrides() {
        let good = BootBindingParser.driverctlOverride(fileName: "pci-0000:01:00.0", contents: "vfio-pci\n", file: "/etc/driverctl.d/pci-0000:01:00.0")
        #expect(good.sources == [BootBindingSource(mechanism: .driverctl, driver: "vfio-pci", target: .address(bdf("0000:01:00.0")), location: SourceLocation(file: "/etc/driverctl.d/pci-0000:01:00.0", line: 1))])
        #expect(BootBindingParser.driverctlOverride(fileName: "usb-1-1", contents: "x", file: "u").sources.isEmpty)
        let badName = BootBindingParser.driverctlOverride(fileName: "pci-01:00", contents: "vfio-pci", file: "b")
        #expect(badName.sources.isEmpty && badName.problems.count == 1)
        let badDriver = BootBindingParser.driverctlOverride(fileName: "pci-0000:01:00.0", contents: "\n", file: "e")
        #expect(badDriver.sources.isEmpty)
        #expect(badDriver.problems.first?.description.hasPrefix("e:1: driverctl override for 0000:01:00.0") == true)
    }

    @Test func udevRulesThatSetDriverOverride() {
        let text = """
            ACTION=="add", SUBSYSTEM=="pci", KERNEL=="0000:02:00.0", ATTR{driver_override}="vfio-pci"
            ACTION=="add", SUBSYSTEM=="pci", ATTR{vendor}=="0x10de", ATTR{device}=="0x1aef", ATTR{driver_override}:="vfio-pci"
            ACTION=="add", SUBSYSTEM=="pci", KERNEL=="0000:03:*", ATTR{driver_override}="vfio-pci"
            ACTION=="add", SUBSYSTEM=="pci", KERNEL=="0000:04:00.0", ATTR{driver_override}=="vfio-pci", RUN+="x"
            SUBSYSTEM=="net", NAME="lan0"
            """
        let parsed = BootBindingParser.udevRules(text, file: "/etc/udev/rules.d/70-gpu.rules", vfioctlRule: false)
        #expect(parsed.sources.map(\.target) == [.address(bdf("0000:02:00.0")), .model(audioModel)])
        #expect(parsed.sources.allSatisfy { $0.mechanism == .udevRule })
        // A glob cannot be resolved to devices; a match (==) on driver_override sets nothing.
        #expect(parsed.problems.map(\.location.line) == [3])
        let ours = BootBindingParser.udevRules(UdevRules().ruleText(for: bdf("0000:05:00.0")), file: "r", vfioctlRule: true)
        #expect(ours.sources.map(\.mechanism) == [.vfioctlRule])
        #expect(ours.sources.map(\.target) == [.address(bdf("0000:05:00.0"))])
    }

    @Test func initramfsModuleLists() {
        #expect(BootBindingParser.initramfsToolsModules("# list\nvfio_pci\nvfio-iommu-type1 option=1\n\n") == ["vfio_pci", "vfio_iommu_type1"])
        #expect(BootBindingParser.dracutDrivers("force_drivers+=\" vfio-pci vfio_iommu_type1 \"\nadd_drivers+=\"nvme\"\nomit_drivers+=\"x\"\n") == ["vfio_pci", "vfio_iommu_type1", "nvme"])
    }
}

@Suite struct BootBindingPlanTests {
    let gpu1 = BootBindingDevice(address: bdf("0000:01:00.0"), model: gpuModel)
    let audio1 = BootBindingDevice(address: bdf("0000:01:00.1"), model: audioModel)
    let gpu2 = BootBindingDevice(address: bdf("0000:02:00.0"), model: gpuModel)
    let bootGPU = BootBindingDevice(address: bdf("0000:03:00.0"), model: gpuModel, isBootVGA: true)

    func declarations(_ parts: BootBindingDeclarations...) -> BootBindingDeclarations {
        var all = BootBindingDeclarations()
        for part in parts { all.merge(part) }
        return all
    }

    @Test func eachDeviceNamesItsMechanismAndFile() {
        let cmdline = BootBindingParser.kernelCommandLine("vfio-pci.ids=10de:1aef", file: "/proc/cmdline")
        let driverctl = BootBindingParser.driverctlOverride(fileName: "pci-0000:01:00.0", contents: "vfio-pci", file: "/etc/driverctl.d/pci-0000:01:00.0")
        let plan = BootBindingPlan.plan(devices: [gpu1, audio1], declarations: declarations(cmdline, driverctl))
        #expect(plan.sources(for: gpu1.address).map(\.mechanism) == [.driverctl])
        #expect(plan.sources(for: audio1.address).map(\.mechanism) == [.kernelCommandLine])
        #expect(plan.findings.isEmpty, "\(plan.findings)")
        #expect(plan.blockersForPersistAdd(gpu1.address).isEmpty)
        #expect(plan.othersBinding(gpu1.address).map(\.mechanism) == [.driverctl])
    }

    @Test func twoMechanismsForOneDevice() {
        let modprobe = BootBindingParser.modprobeConfiguration("options vfio-pci ids=10de:2204", file: "/etc/modprobe.d/vfio.conf")
        let ours = BootBindingParser.udevRules(UdevRules().ruleText(for: gpu1.address), file: "/etc/udev/rules.d/90-vfioctl-0000:01:00.0.rules", vfioctlRule: true)
        let plan = BootBindingPlan.plan(devices: [gpu1], declarations: declarations(modprobe, ours))
        #expect(plan.findings.count == 1)
        #expect(plan.findings.first?.status == .warning)
        #expect(plan.findings.first?.text.contains("2 mechanisms") == true)
        #expect(plan.findings.first?.text.contains("/etc/modprobe.d/vfio.conf:1") == true)
        // vfioctl's own rule and early files are one binding, not a conflict.
        var early = BootBindingDeclarations()
        early.sources = [BootBindingSource(mechanism: .vfioctlEarly, driver: "vfio-pci", target: .address(gpu1.address), location: SourceLocation(file: "record"))]
        early.initramfsModules = ["vfio_pci"]
        #expect(BootBindingPlan.plan(devices: [gpu1], declarations: declarations(ours, early)).findings.isEmpty)
    }

    @Test func differentDriversAreAProblemAndBlockPersistAdd() {
        let driverctl = BootBindingParser.driverctlOverride(fileName: "pci-0000:01:00.0", contents: "nvidia", file: "/etc/driverctl.d/pci-0000:01:00.0")
        let stub = BootBindingParser.kernelCommandLine("pci-stub.ids=10de:1aef", file: "/proc/cmdline")
        let ours = BootBindingParser.udevRules(UdevRules().ruleText(for: gpu1.address), file: "r", vfioctlRule: true)
        let plan = BootBindingPlan.plan(devices: [gpu1, audio1], declarations: declarations(driverctl, stub, ours))
        #expect(plan.findings.map(\.status) == [.problem])
        #expect(plan.findings.first?.text.contains("different drivers") == true)
        #expect(plan.blockersForPersistAdd(gpu1.address).map(\.driver) == ["nvidia"])
        #expect(plan.blockersForPersistAdd(audio1.address).map(\.driver) == ["pci-stub"])
    }

    @Test func idsThatCatchMoreThanMeant() {
        let cmdline = BootBindingParser.kernelCommandLine("vfio-pci.ids=10de:2204", file: "/proc/cmdline")
        let twoGPUs = BootBindingPlan.plan(devices: [gpu1, gpu2], declarations: cmdline)
        #expect(twoGPUs.findings.map(\.status) == [.warning])
        #expect(twoGPUs.findings.first?.text.contains("catches 2 devices of that model: 0000:01:00.0 0000:02:00.0") == true)
        #expect(twoGPUs.sources(for: gpu2.address).count == 1)
        let withBootVGA = BootBindingPlan.plan(devices: [gpu1, bootGPU], declarations: cmdline)
        #expect(withBootVGA.findings.map(\.status) == [.problem])
        #expect(withBootVGA.findings.first?.address == bootGPU.address)
        #expect(withBootVGA.findings.first?.text.contains("boot display") == true)
        #expect(BootBindingPlan.plan(devices: [gpu1], declarations: cmdline).findings.isEmpty)
    }

    @Test func softdepWithoutVFIOInTheInitramfs() {
        let softdep = BootBindingParser.modprobeConfiguration("softdep nouveau pre: vfio-pci", file: "/etc/modprobe.d/vfio.conf")
        let plan = BootBindingPlan.plan(devices: [gpu1], declarations: softdep)
        #expect(plan.findings.map(\.status) == [.warning])
        #expect(plan.findings.first?.location == SourceLocation(file: "/etc/modprobe.d/vfio.conf", line: 1))
        var withModule = softdep
        withModule.initramfsModules = ["vfio_pci"]
        #expect(BootBindingPlan.plan(devices: [gpu1], declarations: withModule).findings.isEmpty)
        // A softdep on something else is not about vfio-pci.
        #expect(BootBindingPlan.plan(devices: [gpu1], declarations: BootBindingParser.modprobeConfiguration("softdep a pre: b", file: "f")).findings.isEmpty)
    }

    @Test func driverctlOverrideForAMissingDevice() {
        let driverctl = BootBindingParser.driverctlOverride(fileName: "pci-0000:09:00.0", contents: "vfio-pci", file: "/etc/driverctl.d/pci-0000:09:00.0")
        let plan = BootBindingPlan.plan(devices: [gpu1], declarations: driverctl)
        #expect(plan.findings.map(\.status) == [.warning])
        #expect(plan.findings.first?.text.hasPrefix("/etc/driverctl.d/pci-0000:09:00.0:1: driverctl binds 0000:09:00.0") == true)
        #expect(plan.findings.first?.text.contains("driverctl unset-override 0000:09:00.0") == true)
    }
}

@Suite struct BootBindingReaderTests {
    func tree(_ files: [String: String]) throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("boot-binding-\(UUID().uuidString)").path
        for (relative, text) in files {
            let path = root + "/" + relative
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        return root
    }

    @Test func everyFormatUnderOneRoot() throws {
        let root = try tree([
            "proc/cmdline": "root=/dev/sda1 vfio-pci.ids=10de:1aef\n",
            "etc/modprobe.d/vfio.conf": "options vfio-pci ids=10de:2204\nsoftdep nouveau pre: vfio-pci\n",
            "usr/lib/modprobe.d/vfio.conf": "options vfio-pci ids=ffff:ffff\n",   // shadowed by /etc's file of the same name
            "lib/modprobe.d/other.conf": "options pci_stub ids=8086:10d3\n",
            "etc/driverctl.d/pci-0000:02:00.0": "vfio-pci\n",
            "etc/udev/rules.d/70-mine.rules": "ACTION==\"add\", KERNEL==\"0000:03:00.0\", ATTR{driver_override}=\"vfio-pci\"\n",
            "etc/udev/rules.d/90-vfioctl-0000:04:00.0.rules": UdevRules().ruleText(for: bdf("0000:04:00.0")),
            "etc/initramfs-tools/modules": "vfio_pci\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: root) }
        var reader = BootBindingReader(configRoot: root)
        reader.procRoot = root + "/proc"
        let read = reader.read()
        #expect(read.problems.isEmpty, "\(read.problems)")
        let found = read.sources.map { "\($0.mechanism.rawValue) \($0.driver) \($0.location)" }
        #expect(found == [
            "kernel-command-line vfio-pci \(root)/proc/cmdline",
            "modprobe-options pci-stub \(root)/lib/modprobe.d/other.conf:1",
            "modprobe-options vfio-pci \(root)/etc/modprobe.d/vfio.conf:1",
            "driverctl vfio-pci \(root)/etc/driverctl.d/pci-0000:02:00.0:1",
            "udev-rule vfio-pci \(root)/etc/udev/rules.d/70-mine.rules:1",
            "vfioctl-rule vfio-pci \(root)/etc/udev/rules.d/90-vfioctl-0000:04:00.0.rules:4",
        ])
        #expect(read.softdeps.map(\.module) == ["nouveau"])
        #expect(read.initramfsModules == ["vfio_pci"])
    }

    @Test func unreadableFilesAreNamedNotFatal() throws {
        let root = try tree(["proc/cmdline": "quiet\n", "etc/modprobe.d/good.conf": "options vfio-pci ids=10de:2204\n"])
        defer { try? FileManager.default.removeItem(atPath: root) }
        // A FIFO where a file should be: refused without blocking, named in the problem.
        let fifo = root + "/etc/modprobe.d/pipe.conf"
        #expect(mkfifo(fifo, 0o644) == 0)
        try FileManager.default.createDirectory(atPath: root + "/etc/modprobe.d/dir.conf", withIntermediateDirectories: true)
        var reader = BootBindingReader(configRoot: root)
        reader.procRoot = root + "/proc"
        let read = reader.read()
        #expect(read.sources.count == 1)
        #expect(read.problems.map(\.location.file).sorted() == [root + "/etc/modprobe.d/dir.conf", fifo])
        #expect(read.problems.allSatisfy { $0.message.contains("not a regular file") })
        // No /proc/cmdline under the root: said, not fatal.
        reader.procRoot = root + "/absent"
        #expect(reader.read().problems.contains { $0.location.file == root + "/absent/cmdline" && $0.message.hasPrefix("cannot read") })
    }
}

@Suite struct BootCheckOtherBindingTests {
    let gpu = try! PCIAddress(parsing: "0000:01:00.0")

    func facts(_ sources: [BootBindingSource]) -> BootFacts {
        var facts = BootFacts(address: gpu, id: "10de:2204")
        facts.otherBindings = sources
        return facts
    }

    @Test func driverctlToVFIOBindsIt() {
        let (willBind, findings) = BootCheck.judge(facts(BootBindingParser.driverctlOverride(fileName: "pci-0000:01:00.0", contents: "vfio-pci", file: "/etc/driverctl.d/pci-0000:01:00.0").sources))
        #expect(willBind)
        #expect(findings.map(\.text) == ["driverctl binds 0000:01:00.0 to vfio-pci (/etc/driverctl.d/pci-0000:01:00.0:1)"])
    }

    @Test func anotherDriverIsContested() {
        var contested = facts(BootBindingParser.driverctlOverride(fileName: "pci-0000:01:00.0", contents: "nvidia", file: "d").sources)
        contested.udevRule = true
        let (willBind, findings) = BootCheck.judge(contested)
        #expect(!willBind)
        #expect(findings.contains { $0.status == .problem && $0.text.contains("to nvidia (d:1)") })
        // Alone, it is the only finding: "nothing binds" would hide the reason.
        let alone = BootCheck.judge(facts(BootBindingParser.driverctlOverride(fileName: "pci-0000:01:00.0", contents: "nvidia", file: "d").sources))
        #expect(!alone.willBind && alone.findings.count == 1)
    }
}

/// The CLI on a fixture host with a fixture /etc: persist list, check and add, and doctor.
@Suite struct BootBindingCLITests {
    @Test func driverctlIsNamedAndPersistAddRefusesAnotherDriver() throws {
        let tree = try TemporarySysfsTree.create(SplitSlotHost.fixture)
        let root = tree.rootPath + "-config"
        defer { try? tree.remove(); try? FileManager.default.removeItem(atPath: root) }
        let gpu = GPUWorkstation.gpu.description, audio = GPUWorkstation.gpuAudio.description
        for (relative, text) in [
            "etc/driverctl.d/pci-\(gpu)": "nvidia\n",
            "etc/driverctl.d/pci-0000:7f:00.0": "vfio-pci\n",
            "proc/cmdline": "ro quiet vfio-pci.ids=10de:1aef,10de:zz\n",
        ] {
            let path = root + "/" + relative
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        try HostEnvironment.writeMountTable(procRoot: root + "/proc")
        let common = ["--sysfs-root", tree.rootPath]
        let dirs = ["--config-root", root, "--rules-dir", root + "/rules"]
        let listed = try VfioctlBinary.run(common + ["persist", "list", "--proc-root", root + "/proc"] + dirs)
        #expect(listed.status == 0, "\(listed.stderr)")
        #expect(listed.stdout.contains("\(gpu)  driverctl → nvidia (\(root)/etc/driverctl.d/pci-\(gpu):1)"), "\(listed.stdout)")
        #expect(listed.stdout.contains("\(audio)  kernel-command-line → vfio-pci (\(root)/proc/cmdline)"))
        #expect(listed.stdout.contains("malformed ids= entry '10de:zz'"))
        #expect(listed.stdout.contains("no device 0000:7f:00.0 exists"))
        let json = try VfioctlBinary.run(common + ["persist", "list", "--json", "--proc-root", root + "/proc"] + dirs)
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        #expect(entries.contains { $0["address"] as? String == gpu && $0["mechanism"] as? String == "driverctl" && $0["line"] as? Int == 1 })

        // persist add refuses to race driverctl's nvidia override; --force adds and names it.
        let refused = try VfioctlBinary.run(common + ["persist", "add", gpu, "--proc-root", root + "/proc"] + dirs)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("driverctl → nvidia") && refused.stderr.contains("--force"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: root + "/rules/90-vfioctl-\(gpu).rules"))
        let forced = try VfioctlBinary.run(common + ["persist", "add", gpu, "--force", "--proc-root", root + "/proc"] + dirs)
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(forced.stdout.contains("left in place: driverctl → nvidia"), "\(forced.stdout)")
        // Now two mechanisms, two drivers: persist check says it is not bound for sure.
        let check = try VfioctlBinary.run(common + ["persist", "check", gpu, "--proc-root", root + "/proc", "--modprobe-dir", root + "/etc/modprobe.d", "--state-dir", root + "/state"] + dirs)
        #expect(check.status == 2, "\(check.stdout)")
        #expect(check.stdout.contains("driverctl binds \(gpu) to nvidia"))
        #expect(check.stdout.contains("different drivers"))

        // doctor lists every boot binding (it reads the rules under --config-root, not --rules-dir).
        let doctor = try VfioctlBinary.run(common + ["doctor", "--json", "--proc-root", root + "/proc", "--config-root", root])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(doctor.stdout.utf8)) as? [String: Any])
        let findings = try #require(report["findings"] as? [[String: Any]])
        let boot = try #require(findings.first { $0["id"] as? String == "boot.bindings" })
        #expect(boot["status"] as? String == "warning")
        let evidence = (boot["evidence"] as? [String]) ?? []
        #expect(evidence.contains { $0.hasPrefix("\(gpu): driverctl → nvidia (\(root)/etc/driverctl.d/pci-\(gpu):1)") }, "\(evidence)")
        #expect(evidence.contains { $0.hasPrefix("\(audio): kernel-command-line → vfio-pci") })
        #expect(evidence.contains { $0.contains("malformed ids= entry '10de:zz'") })
    }
}
