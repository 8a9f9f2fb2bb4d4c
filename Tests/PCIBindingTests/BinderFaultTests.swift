import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SysfsFixtures
import Testing
@testable import PCIBinding
@testable import PCIInventory

/// The binding state machine on fixture trees behind an emulated kernel: every step, every
/// journal write and every rollback, with faults injected where a real host could fail.
@Suite struct BinderFaultTests {
    static let nic0 = "0000:01:00.0", nic1 = "0000:01:00.1", nvme = "0000:02:00.0"

    @Test func bindAndUnbindRoundTripJournalsTheIdentity() throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        let binder = lab.binder()
        let outcomes = try binder.apply(try lab.plan(Self.nvme))
        #expect(outcomes.map(\.action) == [.bound])
        #expect(lab.driver(Self.nvme) == "vfio-pci")
        let entry = try #require(try binder.journal.entry(for: address(Self.nvme)))
        #expect(entry.state == .bound && entry.originalDriver == "nvme")
        #expect(entry.identity == DeviceIdentity(vendorID: 0x144d, deviceID: 0xa808, subsystemVendorID: 0x144d, subsystemDeviceID: 0xa801))
        let back = try binder.unbind(Self.nvme)
        #expect(back.action == .unbound && back.toDriver == "nvme")
        #expect(lab.driver(Self.nvme) == "nvme")
        #expect(try binder.journal.entries().isEmpty)
    }

    /// The journal cannot record the finished bind (/run full): the device must really go back,
    /// not be reported "rolled back" while it sits on vfio-pci.
    @Test(arguments: ["2", "2+"])
    func aJournalFailureAfterTheBindRollsItBackForReal(failing: String) throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        let binder = lab.binder(environment: ["VFIOCTL_JOURNAL_FAIL": failing])
        let outcomes = try binder.apply(try lab.plan(Self.nvme))
        #expect(outcomes.map(\.action) == [.rolledBack])
        #expect(outcomes.first?.toDriver == "nvme")
        #expect(outcomes.first?.reason?.contains("journal") == true)
        #expect(lab.driver(Self.nvme) == "nvme")
        // With every later write failing the entry stays (true: a change was in progress), and
        // restore then finds the device already home.
        let left = try BindingJournal(directory: lab.state).entries()
        #expect(failing == "2+" ? left.map(\.state) == [.binding] : left.isEmpty)
    }

    /// A group is all or nothing, also when the journal fails after the devices were bound.
    @Test func aGroupBindIsUndoneWholeWhenTheJournalFails() throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        let binder = lab.binder(environment: ["VFIOCTL_JOURNAL_FAIL": "2"])
        let outcomes = try binder.apply(try lab.plan(Self.nic0, group: true))
        #expect(outcomes.map(\.action) == [.rolledBack, .rolledBack])
        #expect(lab.driver(Self.nic0) == "igb" && lab.driver(Self.nic1) == "igb")
        #expect(try binder.journal.entries().isEmpty)
    }

    /// The first device of a group binds, the second is refused by vfio-pci: the first goes back.
    @Test func aGroupBindReturnsTheDevicesItBoundWhenALaterOneFails() throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        lab.kernel.refuse("vfio-pci", for: Self.nic1)
        let outcomes = try lab.binder().apply(try lab.plan(Self.nic0, group: true))
        #expect(outcomes.map(\.action) == [.rolledBack, .rolledBack])
        #expect(outcomes[0].reason?.contains("undone because \(Self.nic1)") == true)
        #expect(lab.driver(Self.nic0) == "igb" && lab.driver(Self.nic1) == "igb")
        #expect(try lab.binder().journal.entries().isEmpty)
    }

    /// vfio-pci refuses the device and its own driver will not take it back either: the
    /// outcome says the rollback failed and where the device is; the entry stays for restore.
    @Test func aFailedRollbackIsReportedWithTheRealState() throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        lab.kernel.refuse("vfio-pci", for: Self.nvme)
        lab.kernel.refuse("nvme", for: Self.nvme)
        let outcomes = try lab.binder().apply(try lab.plan(Self.nvme))
        #expect(outcomes.map(\.action) == [.rollbackFailed])
        #expect(outcomes.first?.toDriver == nil)
        #expect(outcomes.first?.reason?.contains("the rollback failed: the device is on no driver, not nvme") == true)
        #expect(try lab.binder().journal.entry(for: address(Self.nvme))?.originalDriver == "nvme")
    }

    /// The original driver was unloaded while the device was on vfio-pci: unbind says so.
    @Test func anUnbindToAnUnloadedDriverIsNotReturned() throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        let binder = lab.binder()
        _ = try binder.apply(try lab.plan(Self.nvme))
        try lab.kernel.unload("nvme")
        let outcome = try binder.unbind(Self.nvme)
        #expect(outcome.action == .notReturned)
        #expect(outcome.reason?.contains("could not return to nvme") == true)
        #expect(try binder.journal.entry(for: address(Self.nvme)) != nil)
    }

    /// drivers_probe never returns: the bind stops with the state, and the journal says a bind
    /// is in progress (which is true), so `restore` can finish it later.
    @Test func aHungDriversProbeIsBoundedAndReported() throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        lab.kernel.hang(onPathEndingWith: "/drivers_probe")
        let started = Date()
        let plan = try lab.plan(Self.nvme)
        let binder = lab.binder(ioTimeout: 0.5)
        do {
            _ = try binder.apply(plan)
            Issue.record("a hung drivers_probe was not reported")
        } catch {
            guard case .sysfsTimeout(_, _, _, let state) = error else { Issue.record("\(error)"); return }
            #expect(state.contains("\(Self.nvme) on no driver (journal: binding)"), "\(state)")
            #expect(error.description.contains("vfioctl restore"))
        }
        #expect(Date().timeIntervalSince(started) < 10)
        #expect(try BindingJournal(directory: lab.state).entry(for: address(Self.nvme))?.state == .binding)
    }

    /// A driver link that leads out of the sysfs root is refused before anything is written.
    @Test func aDriverLinkOutsideTheRootIsRefused() throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        let outside = lab.tree.rootPath + "-outside/bus/pci/drivers/nvme"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: lab.tree.rootPath + "-outside") }
        let plan = try lab.plan(Self.nvme)
        let link = lab.kernel.devicePath(Self.nvme) + "/driver"
        unlink(link)
        #expect(symlink(outside, link) == 0)
        let binder = lab.binder()
        do {
            _ = try binder.apply(plan)
            Issue.record("a driver link outside the root was followed")
        } catch {
            guard case .untrustedSysfs = error else { Issue.record("\(error)"); return }
            #expect(error.description.contains("not to a driver in"))
        }
        #expect(lab.kernel.writes.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: lab.state + "/journal.jsonl"))
    }

    /// driver_override replaced by a link to a file outside the root: nothing is written there.
    @Test func aDriverOverrideLinkOutsideTheRootIsNotWritten() throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        let victim = lab.tree.rootPath + "-victim"
        try "precious\n".write(toFile: victim, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: victim) }
        let plan = try lab.plan(Self.nvme)
        let path = lab.kernel.devicePath(Self.nvme) + "/driver_override"
        unlink(path)
        #expect(symlink(victim, path) == 0)
        #expect(throws: BindingError.self) { try lab.binder().apply(plan) }
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "precious\n")
        #expect(lab.kernel.writes.isEmpty)
    }

    /// A bind killed at any step leaves a journal from which a return brings the device home.
    @Test(arguments: Binder.steps)
    func everyStepCanBeUndoneFromTheJournal(step: String) throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        // Stop at `step` as a kill would: the emulated kernel hangs the next write, a short
        // timeout ends the run, and what is left is what a killed run leaves.
        let binder = lab.binder()
        let plan = try lab.plan(Self.nvme)
        let next = ["journaled": "/driver_override", "override-set": "/unbind", "unbound": "/drivers_probe"]
        if let suffix = next[step] {
            lab.kernel.hang(onPathEndingWith: suffix)
            #expect(throws: BindingError.self) { try lab.binder(ioTimeout: 0.3).apply(plan) }
        } else {
            _ = try binder.apply(plan)
        }
        let entry = try #require(try binder.journal.entry(for: address(Self.nvme)))
        #expect(entry.originalDriver == "nvme")
        let unhung = try BindingLab.reusing(lab)
        let back = try unhung.binder().returnToOriginal([address(Self.nvme)])
        #expect(back.map(\.action) == [.unbound])
        #expect(lab.driver(Self.nvme) == "nvme")
        #expect(lab.kernel.override(of: Self.nvme) == nil)
        #expect(try binder.journal.entries().isEmpty)
    }
}

extension BindingLab {
    /// The same tree with a fresh emulated kernel (no hangs or refusals).
    static func reusing(_ lab: BindingLab) throws -> BindingLab {
        BindingLab(tree: lab.tree, kernel: try FakePCIKernel(tree: lab.tree, devRoot: lab.devRoot), state: lab.state, devRoot: lab.devRoot)
    }

    init(tree: TemporarySysfsTree, kernel: FakePCIKernel, state: String, devRoot: String) {
        self.tree = tree
        self.kernel = kernel
        self.state = state
        self.devRoot = devRoot
    }
}
