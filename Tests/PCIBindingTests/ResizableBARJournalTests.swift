import Foundation
import SysfsFixtures
import Testing
@testable import PCIBinding
@testable import PCIInventory

/// The Resizable BAR journal: `rebar` records the old size, `unbind` and `restore` put it back,
/// `bind --rebar` resizes between the unbind and the probe, and every error of issue 24 (not a
/// power of two, a size not offered, `resourceN_resize` missing or failing with EBUSY, ENOSPC or
/// EINVAL, a journal entry that no longer matches the device) changes nothing. On the workstation
/// fixture with the emulated kernel's `resourceN_resize` (FakeResize.swift).
@Suite("Resizable BAR journal", .serialized)
struct ResizableBARJournalTests {
    static let gpu = ResizableBARTests.gpu
    static var address: PCIAddress { get throws { try PCIAddress(parsing: gpu) } }

    /// A lab whose GPU has BAR1 resizable (256 MiB now) on `driver`, with a 64 GiB bridge window.
    static func lab(driver: String? = nil) throws -> BindingLab {
        let lab = try BindingLab(ResizableBARTests.host(driver: driver))
        try ResizableBARTests.widenBridgeWindow(lab)
        return lab
    }

    static func barSize(_ lab: BindingLab) throws -> UInt64? {
        try lab.inventory().device(try address)?.bars.first { $0.index == 1 }?.size
    }

    /// `rebar` through the library as the CLI does it: plan on a fresh inventory, then the
    /// journalled resize.
    static func rebar(_ lab: BindingLab, _ size: ResizableBARRequest.Size) throws {
        let inventory = try lab.inventory()
        let plan = try ResizableBARPlanner.plan(ResizableBARRequest(address: try address, bar: 1, size: size), inventory: inventory,
                                                bridgeWindow: lab.binder().prefetchableWindow(of:))
        try lab.binder().resizeJournalled(plan, device: try #require(inventory.device(try address)))
    }

    static func unbindPlan(_ lab: BindingLab, force: Bool = false) throws -> BindPlan {
        try BindPlan.unbind(try address, wholeGroup: false, inventory: try lab.inventory(),
                            journal: try lab.binder().journal.entries(), facts: HostFacts(), force: force)
    }

    static func message(_ work: () throws -> Void) -> String? {
        do { try work() } catch { return "\(error)" }
        return nil
    }

    @Test func rebarJournalsTheOldSizeAndUnbindPutsItBack() throws {
        let lab = try Self.lab()
        defer { lab.remove() }
        try Self.rebar(lab, .maximum)
        #expect(try Self.barSize(lab) == 32 << 30)
        let entry = try #require(try lab.binder().journal.entry(for: try Self.address))
        #expect(entry.state == .resized)
        #expect(entry.originalDriver == nil)
        #expect(entry.barSizes == [BindingJournal.BARSize(bar: 1, original: 256 << 20, resized: 32 << 30)])
        // A second resize keeps the first original.
        try Self.rebar(lab, .bytes(8 << 30))
        #expect(try lab.binder().journal.entry(for: try Self.address)?.barSizes.first?.original == 256 << 20)

        let plan = try Self.unbindPlan(lab)
        #expect(!plan.isRefused)
        let outcome = try lab.binder().unbind(Self.gpu)
        #expect(outcome.action == .unbound)
        #expect(outcome.barChanges == [BindOutcome.BARChange(bar: 1, from: 8 << 30, to: 256 << 20)])
        #expect(try Self.barSize(lab) == 256 << 20)
        #expect(try lab.binder().journal.entries().isEmpty)
        #expect(lab.kernel.writes.last { $0.contains("resource1_resize") }?.hasSuffix(" 8") == true)
        // It had no driver and keeps none: no probe hands it to one.
        #expect(!lab.kernel.writes.contains { $0.contains("drivers_probe") })
    }

    @Test func aResizeBackToTheOriginalSizeDropsTheRecord() throws {
        let lab = try Self.lab()
        defer { lab.remove() }
        try Self.rebar(lab, .bytes(1 << 30))
        try Self.rebar(lab, .bytes(256 << 20))
        #expect(try lab.binder().journal.entries().isEmpty)
        #expect(try Self.barSize(lab) == 256 << 20)
    }

    @Test func restoreAllPutsBackAPlainRestoreKeeps() throws {
        let lab = try Self.lab()
        defer { lab.remove() }
        try Self.rebar(lab, .bytes(4 << 30))
        let entries = try lab.binder().journal.entries()
        let plain = BindPlan.restore(entries, all: false, inventory: try lab.inventory(), facts: HostFacts(), force: false)
        #expect(plain.steps.isEmpty)
        let all = BindPlan.restore(entries, all: true, inventory: try lab.inventory(), facts: HostFacts(), force: false)
        #expect(all.steps.map(\.action) == [.unbind])
        let outcomes = try lab.binder().returnToOriginal(all.steps.map(\.address))
        #expect(outcomes.map(\.action) == [.unbound])
        #expect(try Self.barSize(lab) == 256 << 20)
        #expect(try lab.binder().journal.entries().isEmpty)
    }

    @Test func bindWithRebarResizesWithNoDriverBoundAndUnbindPutsItBack() throws {
        let lab = try Self.lab(driver: "nouveau")
        defer { lab.remove() }
        let inventory = try lab.inventory()
        let resizes = try ResizableBARPlanner.planForBind(try Self.address, size: .maximum, bar: nil, inventory: inventory,
                                                          bridgeWindow: lab.binder().prefetchableWindow(of:))
        #expect(resizes.map(\.newSize) == [32 << 30])
        let outcomes = try lab.binder().apply(try lab.plan(Self.gpu), resizes: resizes)
        #expect(outcomes.map(\.action) == [.bound])
        #expect(outcomes.first?.barChanges == [BindOutcome.BARChange(bar: 1, from: 256 << 20, to: 32 << 30)])
        #expect(lab.driver(Self.gpu) == "vfio-pci")
        #expect(try Self.barSize(lab) == 32 << 30)
        // The resize came after the driver let go and before vfio-pci's probe.
        let writes = lab.kernel.writes.map { ($0 as NSString).lastPathComponent.split(separator: " ").first.map(String.init) ?? "" }
        let unbind = try #require(writes.firstIndex(of: "unbind"))
        let resize = try #require(writes.firstIndex(of: "resource1_resize"))
        let probe = try #require(writes.firstIndex(of: "drivers_probe"))
        #expect(unbind < resize && resize < probe)
        let entry = try #require(try lab.binder().journal.entry(for: try Self.address))
        #expect(entry.state == .bound)
        #expect(entry.originalDriver == "nouveau")
        #expect(entry.barSizes == [BindingJournal.BARSize(bar: 1, original: 256 << 20, resized: 32 << 30)])

        let back = try lab.binder().unbind(Self.gpu)
        #expect(back.action == .unbound)
        #expect(back.barChanges == [BindOutcome.BARChange(bar: 1, from: 32 << 30, to: 256 << 20)])
        #expect(lab.driver(Self.gpu) == "nouveau")
        #expect(try Self.barSize(lab) == 256 << 20)
        #expect(try lab.binder().journal.entries().isEmpty)
    }

    @Test func aFailedBindWithRebarRollsTheSizeBackToo() throws {
        let lab = try Self.lab(driver: "nouveau")
        defer { lab.remove() }
        lab.kernel.refuse("vfio-pci", for: Self.gpu)
        let resizes = try ResizableBARPlanner.planForBind(try Self.address, size: .bytes(16 << 30), bar: 1, inventory: try lab.inventory(),
                                                          bridgeWindow: lab.binder().prefetchableWindow(of:))
        let outcomes = try lab.binder().apply(try lab.plan(Self.gpu), resizes: resizes)
        #expect(outcomes.map(\.action) == [.rolledBack])
        #expect(lab.driver(Self.gpu) == "nouveau")
        #expect(try Self.barSize(lab) == 256 << 20)
        #expect(try lab.binder().journal.entries().isEmpty)
    }

    @Test func bindWithRebarRefusals() throws {
        // Already on vfio-pci: the bind would not unbind it.
        let onVFIO = try Self.lab(driver: "vfio-pci")
        defer { onVFIO.remove() }
        #expect(Self.message {
            _ = try ResizableBARPlanner.planForBind(try Self.address, size: .maximum, bar: nil, inventory: try onVFIO.inventory(),
                                                    bridgeWindow: { _ in 0...UInt64.max })
        }?.contains("on vfio-pci already") == true)
        // A size the device does not offer, and one the bridge window cannot hold.
        let lab = try BindingLab(ResizableBARTests.host(driver: "nouveau"))
        defer { lab.remove() }
        #expect(Self.message {
            _ = try ResizableBARPlanner.planForBind(try Self.address, size: .bytes(64 << 30), bar: nil, inventory: try lab.inventory(),
                                                    bridgeWindow: lab.binder().prefetchableWindow(of:))
        }?.contains("does not support 64 GiB") == true)
        #expect(Self.message {
            _ = try ResizableBARPlanner.planForBind(try Self.address, size: .maximum, bar: nil, inventory: try lab.inventory(),
                                                    bridgeWindow: lab.binder().prefetchableWindow(of:))
        }?.contains("prefetchable window is 288 MiB") == true)
        #expect(lab.driver(Self.gpu) == "nouveau")
        #expect(lab.kernel.writes.isEmpty)
    }

    /// ENOSPC from the kernel during a bind (a plan that trusted a wider window): the bind is
    /// rolled back, the device is on its driver at its old size, and the journal is empty.
    @Test func theKernelsENOSPCDuringABindChangesNothing() throws {
        let lab = try BindingLab(ResizableBARTests.host(driver: "nouveau"))
        defer { lab.remove() }
        let resizes = try ResizableBARPlanner.planForBind(try Self.address, size: .maximum, bar: nil, inventory: try lab.inventory(),
                                                          bridgeWindow: { _ in 0...UInt64.max })
        let outcomes = try lab.binder().apply(try lab.plan(Self.gpu), resizes: resizes)
        #expect(outcomes.map(\.action) == [.rolledBack])
        #expect(outcomes.first?.reason?.contains("No space left on device") == true)
        #expect(lab.driver(Self.gpu) == "nouveau")
        #expect(try Self.barSize(lab) == 256 << 20)
        #expect(try lab.binder().journal.entries().isEmpty)
    }

    /// EINVAL, ENOSPC, EBUSY and a missing attribute at the write of `rebar`: the error names the
    /// kernel's reason, the BAR keeps its size and the journal is as before.
    @Test func kernelRefusalsOfRebarLeaveTheJournalAsItWas() throws {
        let lab = try BindingLab(ResizableBARTests.host())
        defer { lab.remove() }
        let device = try #require(try lab.inventory().device(try Self.address))
        let bridge = try PCIAddress(parsing: ResizableBARTests.rootPort)
        func attempt(code: Int, size: UInt64) -> String? {
            let plan = ResizableBARPlan(address: device.address, bar: 1, currentSize: 256 << 20, newSize: size, code: code, bridge: bridge)
            return Self.message { try lab.binder().resizeJournalled(plan, device: device) }
        }
        // EINVAL: a code the device's mask lacks.
        #expect(attempt(code: 16, size: 64 << 30)?.contains("Invalid argument") == true)
        // ENOSPC: the fixture's 288 MiB window.
        #expect(attempt(code: 10, size: 1 << 30)?.contains("No space left on device") == true)
        #expect(try lab.binder().journal.entries().isEmpty)
        // EBUSY from the kernel itself (6.15 and later, VFs enabled), past vfioctl's own check.
        try ResizableBARTests.widenBridgeWindow(lab)
        lab.kernel.refusesResizeWithVFs = true
        try "2\n".write(toFile: lab.kernel.devicePath(Self.gpu) + "/sriov_numvfs", atomically: false, encoding: .utf8)
        #expect(attempt(code: 10, size: 1 << 30)?.contains("Device or resource busy") == true)
        try FileManager.default.removeItem(atPath: lab.kernel.devicePath(Self.gpu) + "/sriov_numvfs")
        // The attribute gone (an older kernel, or the BAR no longer resizable).
        try FileManager.default.removeItem(atPath: lab.kernel.devicePath(Self.gpu) + "/resource1_resize")
        #expect(attempt(code: 10, size: 1 << 30)?.contains("resource1_resize") == true)
        #expect(try lab.binder().journal.entries().isEmpty)
        #expect(try Self.barSize(lab) == 256 << 20)
    }

    /// A journal entry the device no longer matches: unbind is refused with the numbers and
    /// nothing changes; --force returns the driver and leaves the BAR alone.
    @Test func aJournalEntryTheDeviceNoLongerMatchesIsRefused() throws {
        let lab = try Self.lab()
        defer { lab.remove() }
        try Self.rebar(lab, .bytes(16 << 30))
        // Someone else resized it since (or the firmware did at a reset).
        let resources = lab.kernel.devicePath(Self.gpu) + "/resource"
        var lines = try String(contentsOfFile: resources, encoding: .utf8).split(separator: "\n").map(String.init)
        let firstColumn = try #require(lines[1].split(separator: " ").first)
        let start = try #require(UInt64(firstColumn.dropFirst(2), radix: 16))
        lines[1] = "0x\(String(start, radix: 16)) 0x\(String(start + (8 << 30) - 1, radix: 16)) 0x000000000014220c"
        try (lines.joined(separator: "\n") + "\n").write(toFile: resources, atomically: false, encoding: .utf8)
        let plan = try Self.unbindPlan(lab)
        #expect(plan.isRefused)
        let reason = plan.steps.first?.reasons.joined(separator: "; ") ?? ""
        #expect(reason.contains("BAR 1 is 8 GiB now"))
        #expect(reason.contains("from 256 MiB to 16 GiB"))
        let writes = lab.kernel.writes.count
        // Forced: the return goes ahead without touching the BAR.
        let forced = try Self.unbindPlan(lab, force: true)
        #expect(!forced.isRefused)
        _ = try lab.binder().returnToOriginal([try Self.address])
        #expect(!lab.kernel.writes.dropFirst(writes).contains { $0.contains("_resize") })
        #expect(try Self.barSize(lab) == 8 << 30)

        // The resize attribute gone since the rebar.
        let gone = try Self.lab()
        defer { gone.remove() }
        try Self.rebar(gone, .bytes(2 << 30))
        try FileManager.default.removeItem(atPath: gone.kernel.devicePath(Self.gpu) + "/resource1_resize")
        let refused = try Self.unbindPlan(gone)
        #expect(refused.isRefused)
        #expect(refused.steps.first?.reasons.joined().contains("offers no resource1_resize now") == true)
    }

    /// A run killed after the journal write and before the resize: the BAR is at its original
    /// size, which the return accepts and simply drops.
    @Test func anEntryWhoseResizeNeverHappenedIsDropped() throws {
        let lab = try Self.lab()
        defer { lab.remove() }
        let entry = BindingJournal.Entry(address: try Self.address, originalDriver: nil, originalOverride: nil,
                                         identity: DeviceIdentity(try #require(try lab.inventory().device(try Self.address))),
                                         state: .resized, barSizes: [BindingJournal.BARSize(bar: 1, original: 256 << 20, resized: 32 << 30)])
        try lab.binder().journal.record(entry)
        #expect(!(try Self.unbindPlan(lab).isRefused))
        let outcome = try lab.binder().unbind(Self.gpu)
        #expect(outcome.action == .unbound)
        #expect(outcome.barChanges.isEmpty)
        #expect(!lab.kernel.writes.contains { $0.contains("_resize") })
        #expect(try lab.binder().journal.entries().isEmpty)
    }

    @Test func journalLinesWithImpossibleBARSizesAreRefused() throws {
        let directory = NSTemporaryDirectory() + "vfioctl-rebar-journal-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory)
        let bad = [
            (#"[{"bar":1,"original":3000000,"resized":1073741824}]"#, "not a power of two"),
            (#"[{"bar":7,"original":268435456,"resized":1073741824}]"#, "not 0-5"),
            (#"[{"bar":1,"original":268435456,"resized":1073741824},{"bar":1,"original":268435456,"resized":2147483648}]"#, "recorded twice"),
        ]
        for (sizes, expected) in bad {
            let line = #"{"address":"0000:01:00.0","bar_sizes":"# + sizes + #","identity":null,"original_driver":null,"original_override":null,"state":"resized","updated":"2026-12-07T10:00:00Z"}"#
            try (line + "\n").write(toFile: journal.path, atomically: false, encoding: .utf8)
            #expect(Self.message { _ = try BindingJournal(directory: directory).entries() }?.contains(expected) == true, "\(sizes)")
        }
        // Lines without bar_sizes (older vfioctl) read as no resize.
        let old = #"{"address":"0000:01:00.0","identity":null,"original_driver":"nouveau","original_override":null,"state":"bound","updated":"2026-12-07T10:00:00Z"}"#
        try (old + "\n").write(toFile: journal.path, atomically: false, encoding: .utf8)
        #expect(try BindingJournal(directory: directory).entries().first?.barSizes == [])
    }
}
