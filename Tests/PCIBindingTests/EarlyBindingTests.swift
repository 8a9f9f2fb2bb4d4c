#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SysfsFixtures
import Testing
@testable import PCIBinding
@testable import PCIInventory

@Suite struct EarlyBindingTests {
    static let gpu = try! PCIAddress(parsing: "0000:01:00.0")
    static let nic = try! PCIAddress(parsing: "0000:03:00.0")
    static let audio = try! PCIAddress(parsing: "0000:01:00.1")
    let devices = [EarlyDevice(address: nic, nativeModule: "e1000e"), EarlyDevice(address: gpu, nativeModule: "nouveau"),
                   EarlyDevice(address: audio, nativeModule: "snd_hda_intel"), EarlyDevice(address: try! PCIAddress(parsing: "0000:04:00.0"), nativeModule: "nouveau")]

    func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "vfioctl-early-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func initramfsToolsFiles() throws {
        let files = EarlyBindingPlan.files(for: devices, tool: .initramfsTools)
        #expect(files.map(\.path) == [EarlyBindingPlan.modprobeFile, EarlyBindingPlan.initramfsToolsHook, EarlyBindingPlan.initramfsToolsScript])
        let modprobe = try #require(files.first { $0.path == EarlyBindingPlan.modprobeFile })
        // One softdep per module, sorted, even when two devices share it.
        #expect(modprobe.contents.split(separator: "\n").filter { $0.hasPrefix("softdep") }
            == ["softdep e1000e pre: vfio-pci", "softdep nouveau pre: vfio-pci", "softdep snd_hda_intel pre: vfio-pci"])
        #expect(!modprobe.executable)
        let hook = try #require(files.first { $0.path == EarlyBindingPlan.initramfsToolsHook })
        #expect(hook.executable && hook.contents.contains("manual_add_modules vfio_iommu_type1 vfio_pci"))
        #expect(hook.contents.contains("cp /etc/modprobe.d/vfioctl-early.conf \"${DESTDIR}/etc/modprobe.d/\""))
        let script = try #require(files.first { $0.path == EarlyBindingPlan.initramfsToolsScript })
        // Addresses in order, never a vendor:device match.
        #expect(script.contents.contains("for vfioctl_addr in 0000:01:00.0 0000:01:00.1 0000:03:00.0 0000:04:00.0; do"))
        #expect(!script.contents.contains("ids=") && !script.contents.contains("new_id"))
        // Sorts before udev's init-top script, which starts the coldplug.
        #expect(try #require(EarlyBindingPlan.initramfsToolsScript.split(separator: "/").last) < "udev")
        #expect(EarlyBindingPlan.files(for: [], tool: .initramfsTools).isEmpty)
    }

    @Test func dracutFiles() throws {
        let files = EarlyBindingPlan.files(for: devices, tool: .dracut)
        #expect(Set(files.map(\.path)) == [EarlyBindingPlan.modprobeFile, EarlyBindingPlan.dracutSetup, EarlyBindingPlan.dracutHook, EarlyBindingPlan.dracutConf])
        let setup = try #require(files.first { $0.path == EarlyBindingPlan.dracutSetup })
        #expect(setup.contents.contains("inst_hook pre-udev 00 \"$moddir/vfioctl-early.sh\""))
        #expect(setup.contents.contains("instmods vfio vfio_iommu_type1 vfio_pci"))
        // dracut sources hooks: an exit would end its init.
        let hook = try #require(files.first { $0.path == EarlyBindingPlan.dracutHook })
        #expect(!hook.contents.contains("exit"))
        #expect(try #require(files.first { $0.path == EarlyBindingPlan.dracutConf }).contents.contains("add_dracutmodules+=\" vfioctl-early \""))
    }

    @Test func everyScriptIsValidShell() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for tool in InitramfsTool.allCases {
            for file in EarlyBindingPlan.files(for: devices, tool: tool) where file.executable {
                let path = directory + "/script"
                try file.contents.write(toFile: path, atomically: true, encoding: .utf8)
                let shell = file.contents.hasPrefix("#!/bin/bash") ? "/bin/bash" : "/bin/sh"
                let result = try VfioctlBinary.runProgram(URL(fileURLWithPath: shell), ["-n", path])
                #expect(result.status == 0, "\(file.path): \(result.stderr)")
            }
        }
    }

    /// The override script run against a copy of the PCI sysfs layout: the overrides written,
    /// a device a driver already holds unbound, and every device offered to drivers_probe.
    @Test func theOverrideScriptDoesWhatTheInitramfsMust() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pci = directory + "/bus/pci"
        for device in [Self.nic, Self.gpu] {
            try FileManager.default.createDirectory(atPath: "\(pci)/devices/\(device)", withIntermediateDirectories: true)
            try "\n".write(toFile: "\(pci)/devices/\(device)/driver_override", atomically: true, encoding: .utf8)
        }
        try FileManager.default.createDirectory(atPath: "\(pci)/drivers/nouveau", withIntermediateDirectories: true)
        #expect(symlink("\(pci)/drivers/nouveau", "\(pci)/devices/\(Self.gpu)/driver") == 0)
        let script = try #require(EarlyBindingPlan.files(for: [EarlyDevice(address: Self.nic, nativeModule: "e1000e"), EarlyDevice(address: Self.gpu, nativeModule: "nouveau")],
                                                         tool: .initramfsTools).first { $0.path == EarlyBindingPlan.initramfsToolsScript })
        let path = directory + "/init-top"
        try script.contents.replacingOccurrences(of: "/sys/bus/pci", with: pci).write(toFile: path, atomically: true, encoding: .utf8)
        let prereqs = try VfioctlBinary.runProgram(URL(fileURLWithPath: "/bin/sh"), [path, "prereqs"])
        #expect(prereqs.status == 0 && prereqs.stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
        let run = try VfioctlBinary.runProgram(URL(fileURLWithPath: "/bin/sh"), [path], environment: ["PATH": "/nonexistent"])
        #expect(run.status == 0, "\(run.stderr)")
        for device in [Self.nic, Self.gpu] {
            #expect(try String(contentsOfFile: "\(pci)/devices/\(device)/driver_override", encoding: .utf8) == "vfio-pci\n")
        }
        #expect(try String(contentsOfFile: "\(pci)/drivers/nouveau/unbind", encoding: .utf8) == "\(Self.gpu)\n")
        // The nic had no driver: offered to drivers_probe (the gpu's link is still there in this copy).
        #expect(try String(contentsOfFile: "\(pci)/drivers_probe", encoding: .utf8) == "\(Self.nic)\n")
    }

    @Test func toolDetection() {
        #expect(InitramfsTool.detect(hasUpdateInitramfs: true, hasDracut: false) == .initramfsTools)
        #expect(InitramfsTool.detect(hasUpdateInitramfs: false, hasDracut: true) == .dracut)
        #expect(InitramfsTool.detect(hasUpdateInitramfs: true, hasDracut: true) == nil)
        #expect(InitramfsTool.detect(hasUpdateInitramfs: false, hasDracut: false) == nil)
        #expect(InitramfsTool.initramfsTools.regenerateCommand == ["update-initramfs", "-u", "-k", "all"])
        #expect(InitramfsTool.dracut.regenerateCommand == ["dracut", "--force", "--regenerate-all"])
    }

    @Test func theRecordRoundTripsAndRejectsWhatVfioctlNeverWrites() throws {
        let record = EarlyBindingRecord(tool: .dracut, devices: devices.sorted(), files: EarlyBindingPlan.files(for: devices, tool: .dracut).map(\.path))
        let decoded = try EarlyBindingRecord.decode(record.encoded()).get()
        #expect(decoded.tool == .dracut && decoded.devices == devices.sorted() && Set(decoded.files) == Set(record.files))
        let bad = [
            "{\"tool\": \"mkinitcpio\", \"devices\": [], \"files\": []}",
            "{\"tool\": \"dracut\", \"devices\": [{\"address\": \"1:0.0\", \"native_module\": null}], \"files\": []}",
            "{\"tool\": \"dracut\", \"devices\": [{\"address\": \"0000:01:00.0\", \"native_module\": \"x; reboot\"}], \"files\": []}",
            "{\"tool\": \"dracut\", \"devices\": [], \"files\": [\"etc/passwd\"]}",
            "not json",
        ]
        for text in bad {
            guard case .failure = EarlyBindingRecord.decode(text) else { Issue.record("accepted: \(text)"); continue }
        }
        #expect(EarlyBindingPlan.isValidModuleName("snd_hda_intel") && EarlyBindingPlan.isValidModuleName("vfio-pci"))
        #expect(!EarlyBindingPlan.isValidModuleName("") && !EarlyBindingPlan.isValidModuleName("../x") && !EarlyBindingPlan.isValidModuleName("a b"))
    }

    /// Found by the earlybinding fuzz harness: a module name read from a crafted sysfs went into
    /// the record's JSON as it stood, so `a", "native_module": "b` read back as module "b".
    @Test func aModuleNameThatIsNotOneNeverReachesTheRecord() throws {
        let crafted = EarlyDevice(address: Self.gpu, nativeModule: "a\", \"native_module\": \"b")
        #expect(crafted.nativeModule == nil)
        let record = EarlyBindingRecord(tool: .initramfsTools, devices: [crafted], files: [EarlyBindingPlan.modprobeFile])
        #expect(try EarlyBindingRecord.decode(record.encoded()).get() == record)
        #expect(!EarlyBindingPlan.files(for: [crafted], tool: .initramfsTools)[0].contents.contains("softdep"))
    }

    @Test func theStoreWritesRefusesForeignFilesAndUndoes() throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = EarlyBindingStore(configRoot: root)
        // Someone else's file of the same name: nothing is written at all.
        try FileManager.default.createDirectory(atPath: root + "/etc/modprobe.d", withIntermediateDirectories: true)
        try "options foo bar=1\n".write(toFile: store.absolute(EarlyBindingPlan.modprobeFile), atomically: true, encoding: .utf8)
        #expect(throws: BindingError.self) { try store.apply(devices, tool: .initramfsTools) }
        #expect(!FileManager.default.fileExists(atPath: store.absolute(EarlyBindingPlan.initramfsToolsScript)))
        #expect(try store.record() == nil)
        try FileManager.default.removeItem(atPath: store.absolute(EarlyBindingPlan.modprobeFile))

        let written = try store.apply(devices, tool: .initramfsTools)
        #expect(written.count == 3)
        let record = try #require(try store.record())
        #expect(record.devices == devices.sorted() && store.filesAreCurrent(record))
        var status = stat()
        #expect(stat(store.absolute(EarlyBindingPlan.initramfsToolsScript), &status) == 0 && status.st_mode & 0o777 == 0o755)
        // Switching tools removes the other tool's files.
        _ = try store.apply(devices, tool: .dracut)
        #expect(!FileManager.default.fileExists(atPath: store.absolute(EarlyBindingPlan.initramfsToolsScript)))
        #expect(FileManager.default.fileExists(atPath: store.absolute(EarlyBindingPlan.dracutHook)))
        // A file changed by hand is noticed.
        try "# vfioctl persist --early: edited\n".write(toFile: store.absolute(EarlyBindingPlan.dracutHook), atomically: true, encoding: .utf8)
        #expect(!store.filesAreCurrent(try #require(try store.record())))
        // The last device gone: every file and the record removed.
        _ = try store.apply([], tool: .dracut)
        #expect(try store.record() == nil)
        for path in EarlyBindingPlan.knownPaths { #expect(!FileManager.default.fileExists(atPath: store.absolute(path)), "\(path)") }
    }

    @Test func bootCheckJudgesTheEarlyBinding() {
        var facts = BootFacts(address: Self.gpu, id: "10de:2204")
        facts.nativeDriver = "nouveau"
        facts.earlyRecorded = true
        facts.earlyTool = .dracut
        facts.earlyFilesCurrent = true
        facts.initramfsRebuilt = false
        let stale = BootCheck.judge(facts)
        #expect(stale.willBind && !BootCheck.bindsEarly(facts))
        #expect(stale.findings.contains { $0.status == .warning && $0.text.contains("dracut --force --regenerate-all") })
        facts.initramfsRebuilt = true
        #expect(BootCheck.bindsEarly(facts))
        #expect(BootCheck.judge(facts).findings.first?.text.contains("bound early") == true)
        facts.earlyFilesCurrent = false
        #expect(!BootCheck.bindsEarly(facts))
        #expect(BootCheck.judge(facts).findings.first?.text.contains("persist add --early") == true)
    }

    /// The CLI on a fixture host: detection, the files, `persist check` before and after the
    /// initramfs is rebuilt, and `persist remove` undoing it all.
    @Test func theCLIAddsChecksAndRemoves() throws {
        let tree = try TemporarySysfsTree.create(SplitSlotHost.fixture)
        let root = tree.rootPath + "-config"
        defer { try? tree.remove(); try? FileManager.default.removeItem(atPath: root) }
        let gpu = GPUWorkstation.gpu.description
        let common = ["--sysfs-root", tree.rootPath]
        let dirs = ["--config-root", root, "--rules-dir", root + "/rules"]
        try HostEnvironment.writeMountTable(procRoot: root + "/proc")
        let check = ["persist", "check", gpu] + dirs + ["--proc-root", root + "/proc", "--modprobe-dir", root + "/etc/modprobe.d", "--state-dir", root + "/state"]
        // Neither tool under the root: a clear error, nothing written.
        let undetected = try VfioctlBinary.run(common + ["persist", "add", gpu, "--early"] + dirs)
        #expect(undetected.status == 1 && undetected.stderr.contains("--initramfs initramfs-tools|dracut"), "\(undetected.stderr)")
        #expect(!FileManager.default.fileExists(atPath: root + "/" + EarlyBindingRecord.path))
        #expect(try VfioctlBinary.run(common + ["persist", "add", gpu, "--update-initramfs"] + dirs).status == 64)

        try FileManager.default.createDirectory(atPath: root + "/usr/sbin", withIntermediateDirectories: true)
        try "#!/bin/sh\n".write(toFile: root + "/usr/sbin/update-initramfs", atomically: true, encoding: .utf8)
        #expect(chmod(root + "/usr/sbin/update-initramfs", 0o755) == 0)
        try FileManager.default.createDirectory(atPath: root + "/proc/sys/kernel", withIntermediateDirectories: true)
        try "6.12.0-test\n".write(toFile: root + "/proc/sys/kernel/osrelease", atomically: true, encoding: .utf8)
        try "ro quiet\n".write(toFile: root + "/proc/cmdline", atomically: true, encoding: .utf8)
        let added = try VfioctlBinary.run(common + ["persist", "add", gpu, "--early", "--json"] + dirs)
        #expect(added.status == 0, "\(added.stderr)")
        #expect(added.stdout.contains("\"initramfs\" : \"initramfs-tools\"") || added.stdout.contains("\"initramfs\": \"initramfs-tools\""), "\(added.stdout)")
        #expect(added.stdout.contains("update-initramfs -u -k all"))
        let listed = try VfioctlBinary.run(common + ["persist", "list"] + dirs)
        #expect(listed.stdout.contains("\(gpu)  ") && listed.stdout.contains("early (initramfs-tools)"), "\(listed.stdout)")
        // Rebuilding goes to this host's initramfs, never with another root.
        #expect(try VfioctlBinary.run(common + ["persist", "add", gpu, "--early", "--update-initramfs"] + dirs).status == 64)
        let softdeps = try String(contentsOfFile: root + "/" + EarlyBindingPlan.modprobeFile, encoding: .utf8)
        #expect(softdeps.contains("softdep nouveau pre: vfio-pci"))

        // Files written, initramfs not rebuilt yet: bound by the rule, not early; a warning says what to run.
        let before = try VfioctlBinary.run(common + check)
        #expect(before.status == 0, "\(before.stdout)\(before.stderr)")
        #expect(before.stdout.contains("no initramfs of the running kernel") && !before.stdout.contains("from the initramfs"), "\(before.stdout)")
        try FileManager.default.createDirectory(atPath: root + "/boot", withIntermediateDirectories: true)
        try "initrd".write(toFile: root + "/boot/initrd.img-6.12.0-test", atomically: true, encoding: .utf8)
        let after = try VfioctlBinary.run(common + check + ["--json"])
        #expect(after.status == 0 && (after.stdout.contains("\"early\" : true") || after.stdout.contains("\"early\": true")), "\(after.stdout)")
        #expect(after.stdout.contains("softdep nouveau pre: vfio-pci: vfio-pci loads first"), "\(after.stdout)")

        let removed = try VfioctlBinary.run(common + ["persist", "remove", gpu] + dirs)
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(removed.stdout.contains("every early-binding file removed"), "\(removed.stdout)")
        for path in EarlyBindingPlan.knownPaths.union([EarlyBindingRecord.path]) {
            #expect(!FileManager.default.fileExists(atPath: root + "/" + path), "\(path)")
        }
        #expect(try VfioctlBinary.run(common + check).status == 2)
    }
}

/// Binder.bind unbinds the original driver through the bounded write: a driver whose remove
/// never returns stops the bind after VFIOCTL_UNBIND_TIMEOUT, naming what finishes the unbind.
@Suite(.serialized) struct BindUnbindIsBoundedTests {
    @Test func aBindWhoseUnbindHangsStopsAfterTheTimeout() throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        let nvme = "0000:02:00.0"
        lab.kernel.hang(onPathEndingWith: "/drivers/nvme/unbind")
        let plan = try lab.plan(nvme)
        let binder = lab.binder()
        setenv("VFIOCTL_UNBIND_TIMEOUT", "0.5", 1)
        defer { unsetenv("VFIOCTL_UNBIND_TIMEOUT") }
        let started = Date()
        do {
            let outcome = try binder.apply(plan)
            Issue.record("a bind whose unbind never returns finished: \(outcome)")
        } catch {
            guard case .sysfsTimeout(let path, _, let seconds, let state) = error else { Issue.record("not a timeout: \(error)"); return }
            #expect(path.hasSuffix("/driver/unbind") && seconds == 0.5)
            #expect(state.contains("the unbind finishes by itself"), "\(state)")
        }
        #expect(Date().timeIntervalSince(started) < 10)
    }
}
