import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SysfsFixtures
import Testing
@testable import PCIBinding
@testable import PCIInventory

@Suite struct BindingCLITests {
    @Test(arguments: ["nan", "inf", "-inf", "-1", "1e300", "86401", "soon"])
    func aBadLockTimeoutIsAUsageError(value: String) throws {
        try withTemporarySysfsTree(bindingHost()) { tree in
            let result = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "restore", "--dry-run",
                                                "--state-dir", tree.rootPath + "-state", "--lock-timeout=\(value)"])
            #expect(result.status == 64, "\(value): \(result.stderr)")
            #expect(result.stderr.contains("lock-timeout"))
        }
    }

    @Test func aGoodLockTimeoutIsAccepted() throws {
        try withTemporarySysfsTree(bindingHost()) { tree in
            let result = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "restore", "--dry-run",
                                                "--state-dir", tree.rootPath + "-state", "--lock-timeout", "0.5"])
            #expect(result.status == 0, "\(result.stderr)")
        }
    }

    /// A stale entry (no driver recorded) for the device carrying a mounted filesystem: restore
    /// would unbind the disk. It is refused as `bind` refuses it, and nothing is written.
    @Test func restoreRefusesToTakeADiskInUseFromItsDriver() throws {
        let host = try HostWithUsers()
        defer { host.remove() }
        let state = host.tree.rootPath + "-state"
        defer { try? FileManager.default.removeItem(atPath: state) }
        let nvme = try PCIAddress(parsing: GPUWorkstation.nvme.description)
        let inventory = try PCIInventory.scan(root: SysfsRoot(path: host.tree.rootPath), detail: .full)
        let identity = DeviceIdentity(try #require(inventory.device(nvme)))
        try BindingJournal(directory: state).record(.init(address: nvme, originalDriver: nil, originalOverride: nil,
                                                          identity: identity, state: .binding))
        let overridePath = "\(host.tree.rootPath)/bus/pci/devices/\(nvme)/driver_override"
        let before = try String(contentsOfFile: overridePath, encoding: .utf8)
        let result = try VfioctlBinary.run(["--sysfs-root", host.tree.rootPath, "restore", "--all", "--json",
                                            "--proc-root", host.procRoot, "--state-dir", state])
        #expect(result.status == 3, "\(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("\"action\" : \"refused\""))
        #expect(result.stdout.contains("on /data"))
        #expect(try String(contentsOfFile: overridePath, encoding: .utf8) == before)
        #expect(try BindingJournal(directory: state).entries().count == 1)
    }

    /// The address now holds another device than the journal recorded: unbind and restore
    /// refuse it (unless --force) and change nothing.
    @Test func aForeignDeviceAtAJournalledAddressIsRefused() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let state = tree.rootPath + "-state"
            defer { try? FileManager.default.removeItem(atPath: state) }
            let gpu = try PCIAddress(parsing: GPUWorkstation.gpu.description)
            let other = DeviceIdentity(vendorID: 0x8086, deviceID: 0x10d3, subsystemVendorID: 0x8086, subsystemDeviceID: 0)
            try BindingJournal(directory: state).record(.init(address: gpu, originalDriver: "nouveau", originalOverride: nil,
                                                              identity: other, state: .bound))
            for command in [["unbind", gpu.description], ["restore", "--all"]] {
                let result = try VfioctlBinary.run(["--sysfs-root", tree.rootPath] + command + ["--state-dir", state])
                #expect(result.status == 3, "\(command): \(result.stdout) \(result.stderr)")
                #expect(result.stdout.contains("but the journal recorded [8086:10d3]"), "\(result.stdout)")
            }
            #expect(try BindingJournal(directory: state).entries().count == 1)
        }
    }

    /// The original driver is not there to take the device back: unbind must not say success.
    @Test func anUnbindThatLeavesTheDeviceOffItsDriverExitsFive() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let state = tree.rootPath + "-state"
            defer { try? FileManager.default.removeItem(atPath: state) }
            let gpu = try PCIAddress(parsing: GPUWorkstation.gpu.description)
            let inventory = try PCIInventory.scan(root: SysfsRoot(path: tree.rootPath), detail: .full)
            // The fixture's GPU is on vfio-pci, and no kernel moves it: it cannot come back.
            try BindingJournal(directory: state).record(.init(address: gpu, originalDriver: "nouveau", originalOverride: nil,
                                                              identity: DeviceIdentity(try #require(inventory.device(gpu))), state: .bound))
            let result = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "unbind", gpu.description, "--state-dir", state, "--json"])
            #expect(result.status == 5, "\(result.stdout) \(result.stderr)")
            #expect(result.stdout.contains("\"action\" : \"not-returned\""))
            #expect(result.stdout.contains("\"to_driver\" : \"vfio-pci\""))
            #expect(try BindingJournal(directory: state).entries().count == 1)
        }
    }

    /// A FIFO planted as drivers_probe once blocked `bind` forever (holding the lock).
    @Test func aFIFOAsDriversProbeDoesNotHangBind() throws {
        try withTemporarySysfsTree(bindingHost()) { tree in
            let state = tree.rootPath + "-state"
            defer { try? FileManager.default.removeItem(atPath: state) }
            let probe = tree.rootPath + "/bus/pci/drivers_probe"
            unlink(probe)
            #expect(mkfifo(probe, 0o600) == 0)
            let result = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "bind", "0000:02:00.0", "--state-dir", state,
                                                "--dev-root", tree.rootPath + "-dev"], timeout: 60)
            #expect(!result.timedOut, "bind hung on a FIFO")
            // No kernel behind the tree: the bind cannot verify and is rolled back.
            #expect(result.status == 4, "\(result.stdout) \(result.stderr)")
            // And the lock is free again.
            _ = try BindingLock(directory: state, timeout: 0)
        }
    }
}

@Suite struct LiveRootTests {
    /// Spellings of the live /sys are the live /sys: host checks must not be skipped.
    @Test func spellingsOfSysAreTheLiveSystem() throws {
        try #require(FileManager.default.fileExists(atPath: "/sys/bus"))
        for spelling in ["/sys", "/sys/", "/sys/.", "//sys", "/sys/../sys", "/./sys"] {
            #expect(SysfsRoot(path: spelling).isSystem, "\(spelling)")
        }
        try withTemporarySysfsTree(bindingHost()) { tree in
            #expect(!SysfsRoot(path: tree.rootPath).isSystem)
            #expect(!SysfsRoot(path: tree.rootPath + "/.").isSystem)
        }
        #expect(HostFactsReader(sysfs: SysfsRoot(path: "/sys/."), procRoot: "/proc/.").isLiveSystem)
    }

    @Test(arguments: [Double.nan, .infinity, -.infinity, -1, 1e300])
    func theLockRefusesAnInvalidTimeout(timeout: Double) throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(throws: BindingError.self) { _ = try BindingLock(directory: directory, timeout: timeout) }
    }
}

/// A 1,000-device group bind on a fixture tree behind the emulated kernel: the journal is
/// appended once before and once after, so the whole bind is linear (it was quadratic: the
/// journal rewritten and fsynced per step).
@Suite struct GroupBindScaleTests {
    @Test func aThousandDeviceGroupBindsInSeconds() throws {
        let lab = try BindingLab(bindingHost(extraEndpoints: 998))
        defer { lab.remove() }
        let plan = try lab.plan("0000:01:00.0", group: true)
        #expect(plan.steps.filter { $0.action == .bind }.count == 1000)
        let binder = lab.binder()
        let started = Date()
        let outcomes = try binder.apply(plan)
        let bindSeconds = Date().timeIntervalSince(started)
        #expect(outcomes.allSatisfy { $0.action == .bound })
        let returnStarted = Date()
        let back = try binder.returnToOriginal(plan.steps.map(\.address))
        let returnSeconds = Date().timeIntervalSince(returnStarted)
        #expect(back.allSatisfy { $0.action == .unbound })
        print("group-bind-scale: 1000 devices: bind \(String(format: "%.2f", bindSeconds)) s, return \(String(format: "%.2f", returnSeconds)) s")
        #expect(bindSeconds < 30 && returnSeconds < 30)
        #expect(try binder.journal.entries().isEmpty)
    }
}
