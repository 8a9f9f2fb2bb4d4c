import Foundation
import SysfsFixtures
import Testing
@testable import PCIBinding
@testable import PCIInventory

/// Issue 20: `persist add` (with or without --early) applies bind's refusals, exit 3, nothing
/// written; `persist check` re-judges them; a failed --early change leaves nothing behind; files
/// of ours without a record are found by their marker.
@Suite struct PersistSafetyTests {
    struct Dirs {
        let base = NSTemporaryDirectory() + "vfioctl-persist-\(UUID().uuidString)"
        var config: String { base + "/config" }
        var rules: String { base + "/rules" }
        var state: String { base + "/state" }
        var arguments: [String] { ["--config-root", config, "--rules-dir", rules] }
        func remove() { try? FileManager.default.removeItem(atPath: base) }
        /// Every file under the base, relative.
        func files() -> [String] {
            (FileManager.default.enumerator(atPath: base)?.allObjects as? [String] ?? []).filter { path in
                var isDirectory: ObjCBool = false
                return FileManager.default.fileExists(atPath: base + "/" + path, isDirectory: &isDirectory) && !isDirectory.boolValue
            }.sorted()
        }
    }

    @Test func persistAddRefusesWhatBindRefuses() throws {
        let host = try HostWithUsers()
        defer { host.remove() }
        let common = ["--sysfs-root", host.tree.rootPath]
        // The disk of a mounted filesystem, an interface with a route, the boot display, a host bridge.
        for (address, evidence) in [(GPUWorkstation.nvme, "on /data"), (GPUWorkstation.ethernet, "routes"),
                                    (GPUWorkstation.integratedGraphics, "boot display"), (GPUWorkstation.hostBridge, "host bridge")] {
            for early in [false, true] {
                let dirs = Dirs()
                defer { dirs.remove() }
                let extra = early ? ["--early", "--initramfs", "initramfs-tools"] : []
                let result = try VfioctlBinary.run(common + ["persist", "add", address.description] + extra + dirs.arguments + ["--state-dir", dirs.state, "--proc-root", host.procRoot])
                #expect(result.status == 3, "\(address) early=\(early): \(result.stdout)\(result.stderr)")
                #expect(result.stdout.contains(evidence), "\(address): \(result.stdout)")
                #expect(dirs.files().isEmpty, "\(address) early=\(early) wrote \(dirs.files())")
            }
        }
        // --force persists it; `persist check` judges it again on every run: exit 3.
        let dirs = Dirs()
        defer { dirs.remove() }
        let nvme = GPUWorkstation.nvme.description
        let forced = try VfioctlBinary.run(common + ["persist", "add", nvme, "--force"] + dirs.arguments + ["--state-dir", dirs.state, "--proc-root", host.procRoot])
        #expect(forced.status == 0, "\(forced.stderr)")
        let check = try VfioctlBinary.run(common + ["persist", "check", nvme] + dirs.arguments
                                          + ["--state-dir", dirs.state, "--proc-root", host.procRoot, "--modprobe-dir", dirs.base + "/modprobe.d"])
        #expect(check.status == 3, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.contains("at boot is unsafe") && check.stdout.contains("on /data"), "\(check.stdout)")
        // A device that is safe to take is persisted (exit 0).
        let gpu = try VfioctlBinary.run(common + ["persist", "add", GPUWorkstation.gpu.description] + dirs.arguments + ["--state-dir", dirs.state, "--proc-root", host.procRoot])
        #expect(gpu.status == 0, "\(gpu.stdout)\(gpu.stderr)")
    }

    /// The record cannot be written (its directory is a file): every file the change wrote is
    /// removed again; nothing is left that no command can see.
    @Test func aFailedEarlyAddLeavesNothingBehind() throws {
        let dirs = Dirs()
        defer { dirs.remove() }
        try FileManager.default.createDirectory(atPath: dirs.config + "/etc", withIntermediateDirectories: true)
        try Data("not a directory".utf8).write(to: URL(fileURLWithPath: dirs.config + "/etc/vfioctl"))
        let store = EarlyBindingStore(configRoot: dirs.config)
        let device = EarlyDevice(address: try PCIAddress(parsing: "0000:01:00.0"), nativeModule: "nouveau")
        #expect(throws: BindingError.self) { _ = try store.apply([device], tool: .initramfsTools) }
        #expect(dirs.files() == ["config/etc/vfioctl"], "\(dirs.files())")
        for path in EarlyBindingPlan.knownPaths { #expect(!FileManager.default.fileExists(atPath: store.absolute(path))) }
    }

    /// Files of ours left without a record (a change killed half-way): `persist check` names
    /// them, `persist remove` deletes them.
    @Test func filesWithoutARecordAreFoundByTheirMarker() throws {
        let tree = try TemporarySysfsTree.create(.gpuWorkstation)
        defer { try? tree.remove() }
        let dirs = Dirs()
        defer { dirs.remove() }
        let gpu = GPUWorkstation.gpu.description
        let store = EarlyBindingStore(configRoot: dirs.config)
        _ = try store.apply([EarlyDevice(address: try PCIAddress(parsing: gpu), nativeModule: "nouveau")], tool: .initramfsTools)
        try FileManager.default.removeItem(atPath: store.absolute(EarlyBindingRecord.path))
        #expect(store.unrecordedFiles(naming: try PCIAddress(parsing: gpu), record: nil).count == 3)
        let common = ["--sysfs-root", tree.rootPath]
        let check = try VfioctlBinary.run(common + ["persist", "check", gpu] + dirs.arguments + ["--state-dir", dirs.state, "--modprobe-dir", dirs.base + "/none"])
        #expect(check.stdout.contains("no record lists them"), "\(check.stdout)")
        let removed = try VfioctlBinary.run(common + ["persist", "remove", gpu] + dirs.arguments)
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(dirs.files().isEmpty, "\(dirs.files())")
    }

    /// A foreign udev rule with vfioctl's file name is neither overwritten nor deleted.
    @Test func aForeignRuleIsLeftAlone() throws {
        let tree = try TemporarySysfsTree.create(.gpuWorkstation)
        defer { try? tree.remove() }
        let dirs = Dirs()
        defer { dirs.remove() }
        let gpu = GPUWorkstation.gpu.description
        try FileManager.default.createDirectory(atPath: dirs.rules, withIntermediateDirectories: true)
        let rule = dirs.rules + "/90-vfioctl-\(gpu).rules"
        try Data("# the admin's own rule\n".utf8).write(to: URL(fileURLWithPath: rule))
        let common = ["--sysfs-root", tree.rootPath]
        let added = try VfioctlBinary.run(common + ["persist", "add", gpu] + dirs.arguments + ["--state-dir", dirs.state])
        #expect(added.status == 1 && added.stderr.contains("not vfioctl's"), "\(added.stderr)")
        let removed = try VfioctlBinary.run(common + ["persist", "remove", gpu] + dirs.arguments)
        #expect(removed.status == 1, "\(removed.stderr)")
        #expect(try String(contentsOfFile: rule, encoding: .utf8) == "# the admin's own rule\n")
        #expect(!added.stderr.contains("NSCocoaErrorDomain") && !removed.stderr.contains("NSCocoaErrorDomain"))
    }
}
