#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PCIInventory
import TextFormat

/// `vfioctl rebar`: one BAR of one device to a new size through the kernel's
/// `resourceN_resize` (Linux 6.1 and later), which works only while no driver is bound.
public struct ResizableBARRequest: Sendable, Equatable {
    /// The size asked for: bytes (a power of two of at least 1 MiB) or the largest offered.
    public enum Size: Sendable, Equatable {
        case bytes(UInt64)
        case maximum
    }

    /// The device.
    public var address: PCIAddress
    /// The BAR's index (0-5).
    public var bar: Int
    /// The size asked for.
    public var size: Size

    /// A request as given.
    public init(address: PCIAddress, bar: Int, size: Size) {
        self.address = address
        self.bar = bar
        self.size = size
    }
}

/// A resize judged possible: from which size to which, and the window it must fit.
public struct ResizableBARPlan: Sendable, Equatable {
    /// The device.
    public let address: PCIAddress
    /// The BAR's index.
    public let bar: Int
    /// Its size now, in bytes.
    public let currentSize: UInt64
    /// The size it gets, in bytes.
    public let newSize: UInt64
    /// What `resourceN_resize` takes: n for 2^n MiB.
    public let code: Int
    /// The upstream bridge whose prefetchable window must hold the BAR (nil on a root bus).
    public let bridge: PCIAddress?
    /// Whether the size is already the one asked for (nothing to write).
    public var isUnchanged: Bool { currentSize == newSize }
}

/// The rules of a resize, pure: what the device offers, that no driver holds it, that no VFs
/// exist (the kernel refuses then from 6.15), and that the upstream bridge's prefetchable window
/// can hold the new size.
public enum ResizableBARPlanner {
    /// Plans `request` on `inventory`; `bridgeWindow` gives a bridge's prefetchable window
    /// (`resource` line 16) when it has one. With `unbindingFirst` (a step of `bind`, which
    /// unbinds the driver before it resizes) a bound driver is not refused. Throws `.refused`
    /// with the numbers.
    public static func plan(_ request: ResizableBARRequest, inventory: PCIInventory, unbindingFirst: Bool = false,
                            bridgeWindow: (PCIAddress) -> ClosedRange<UInt64>?) throws(BindingError) -> ResizableBARPlan {
        guard let device = inventory.device(request.address) else { throw .noSuchDevice(address: request.address.description) }
        let name = "\(device.address) BAR \(request.bar)"
        guard let entry = device.resizableBARs.first(where: { $0.index == request.bar }) else {
            let others = device.resizableBARs.map { String($0.index) }
            throw .refused("\(name) is not resizable (no Resizable BAR capability entry for it"
                           + (others.isEmpty ? "; the device has none)" : "; resizable: BAR \(others.joined(separator: ", ")))"))
        }
        guard let kernelSizes = entry.kernelSizes else {
            throw .refused("\(device.address) has no resource\(request.bar)_resize in sysfs: the kernel cannot resize it (Linux 6.1 or later is needed)")
        }
        guard let current = device.bars.first(where: { $0.index == request.bar })?.size ?? entry.currentSize else {
            throw .refused("\(name) has no size in sysfs `resource`; nothing changed")
        }
        let newSize: UInt64
        switch request.size {
        case .maximum:
            guard let largest = kernelSizes.max() else { throw .refused("\(name): resource\(request.bar)_resize offers no size") }
            newSize = largest
        case .bytes(let bytes):
            guard ResizableBARSize.code(bytes: bytes) != nil else {
                throw .refused("\(name): \(byteCount(bytes)) is not a power of two of at least 1 MiB")
            }
            guard kernelSizes.contains(bytes) else {
                throw .refused("\(name) does not support \(byteCount(bytes)); it supports " + kernelSizes.map { byteCount($0) }.joined(separator: ", "))
            }
            newSize = bytes
        }
        guard let code = ResizableBARSize.code(bytes: newSize) else { throw .refused("\(name): \(byteCount(newSize)) has no size code") }
        let bridge = device.parentBridges.last
        let plan = ResizableBARPlan(address: device.address, bar: request.bar, currentSize: current, newSize: newSize, code: code, bridge: bridge)
        if plan.isUnchanged { return plan }
        if let driver = device.driver, !unbindingFirst {
            throw .refused("\(device.address) is bound to \(driver): the kernel resizes BARs only with no driver bound; run `vfioctl unbind \(device.address)` or bind with `vfioctl bind \(device.address) --rebar max`")
        }
        if let vfs = device.sriov?.enabledVFs, vfs > 0 {
            throw .refused("\(device.address) has \(vfs) VFs enabled: remove them first (`vfioctl sriov \(device.address) --vfs 0`); Linux 6.15 and later refuse a resize while VFs exist")
        }
        if let bridge, newSize > current {
            guard let window = bridgeWindow(bridge) else {
                throw .refused("\(name) to \(byteCount(newSize)): the upstream bridge \(bridge) has no prefetchable window to hold it; enable Above 4G Decoding in the firmware or boot with pci=realloc")
            }
            // Compared as spans (size - 1) so a window of the whole 64-bit space cannot overflow.
            let windowSpan = window.upperBound - window.lowerBound
            let windowSize = windowSpan == .max ? windowSpan : windowSpan + 1
            if newSize - 1 > windowSpan {
                throw .refused("\(name) to \(byteCount(newSize)): the upstream bridge \(bridge)'s prefetchable window is \(byteCount(windowSize)) (\(window.lowerBound.hex())-\(window.upperBound.hex())), smaller than the new size; enable Above 4G Decoding and Resizable BAR in the firmware, or boot with pci=realloc")
            }
        }
        return plan
    }
}

extension ResizableBARPlanner {
    /// Plans `bind --rebar`: with `bar` that BAR; without it, for `max` each resizable BAR of the
    /// device, for a size its only resizable BAR. Each is planned as if the driver were already
    /// unbound (the bind unbinds it first). A device already on vfio-pci is refused: the bind
    /// would not unbind it, so no resize could happen.
    public static func planForBind(_ address: PCIAddress, size: ResizableBARRequest.Size, bar: Int?, inventory: PCIInventory,
                                   bridgeWindow: (PCIAddress) -> ClosedRange<UInt64>?) throws(BindingError) -> [ResizableBARPlan] {
        guard let device = inventory.device(address) else { throw .noSuchDevice(address: address.description) }
        if device.driver == BindPlan.targetDriver {
            throw .refused("\(address) is on vfio-pci already, so the bind would not unbind it and no BAR could be resized; run `vfioctl unbind \(address)` first, or `vfioctl rebar` once no driver holds it")
        }
        let indexes: [Int]
        if let bar {
            indexes = [bar]
        } else if case .maximum = size {
            indexes = device.resizableBARs.map(\.index)
        } else if device.resizableBARs.count == 1, let only = device.resizableBARs.first {
            indexes = [only.index]
        } else {
            indexes = []
        }
        guard !indexes.isEmpty else {
            let listed = device.resizableBARs.map { String($0.index) }.joined(separator: ", ")
            throw .refused(device.resizableBARs.isEmpty ? "\(address) has no Resizable BAR capability: --rebar cannot resize any BAR"
                           : "\(address) has resizable BARs \(listed): name one with --rebar-bar")
        }
        var plans: [ResizableBARPlan] = []
        for index in indexes {
            plans.append(try plan(ResizableBARRequest(address: address, bar: index, size: size), inventory: inventory,
                                  unbindingFirst: true, bridgeWindow: bridgeWindow))
        }
        return plans
    }
}

extension Binder {
    /// Writes `plan.code` to the device's `resourceN_resize`, then checks that `resource` shows
    /// the new size. Journals nothing (`resizeJournalled` and `apply` do). The caller holds the
    /// `BindingLock` and planned on a fresh inventory.
    public func resize(_ plan: ResizableBARPlan) throws(BindingError) {
        guard !plan.isUnchanged else { return }
        try writeBARSize(plan.address, bar: plan.bar, code: plan.code, size: plan.newSize)
    }

    /// `vfioctl rebar`: journals the BAR's old size (state `resized`, or the device's existing
    /// entry), resizes, and leaves the record for `unbind` and `restore`. A resize back to the
    /// original size drops the record. If the kernel refuses the write, the journal is put back
    /// as it was. `device` is the inventory's view the plan was made on. The caller holds the
    /// `BindingLock`.
    public func resizeJournalled(_ plan: ResizableBARPlan, device: PCIDevice) throws(BindingError) {
        guard !plan.isUnchanged else { return }
        let before = try journal.entry(for: plan.address)
        if let before, !before.state.isComplete {
            throw .refused("the journal holds an unfinished change of \(plan.address) (state \(before.state.rawValue)); run `vfioctl restore` first")
        }
        if let before, let recorded = before.identity, let now = DeviceIdentity(device), recorded != now {
            throw .refused("\(plan.address) now holds \(now), but the journal recorded \(recorded); check the entry (`vfioctl restore --dry-run`) first")
        }
        let override = try self.override(of: plan.address)
        var entry = before ?? BindingJournal.Entry(address: plan.address, originalDriver: nil, originalOverride: override,
                                                   identity: DeviceIdentity(device), state: .resized)
        entry.barSizes = entry.recordingResize(bar: plan.bar, from: plan.currentSize, to: plan.newSize)
        entry.updated = Date()
        // On disk before the write: a run killed after it leaves a record `restore --all` reads.
        if entry.state == .resized && entry.barSizes.isEmpty {
            try journal.remove(plan.address)
        } else {
            try journal.record(entry)
        }
        do { try resize(plan) } catch {
            let journalNote: String
            do throws(BindingError) {
                if let before { try journal.record(before) } else { try journal.remove(plan.address) }
                journalNote = ""
            } catch let problem {
                journalNote = "; the journal could not be put back (\(problem.failureOnly)): `vfioctl restore --all` will find the BAR at its old size and drop the entry"
            }
            throw error.appending(journalNote)
        }
    }

    /// The journalled BARs of `address` still at the size vfioctl gave them (not original).
    func pendingBARRestores(_ address: PCIAddress, entry: BindingJournal.Entry?) -> [BindingJournal.BARSize] {
        guard let entry, !entry.barSizes.isEmpty else { return [] }
        let sizes = currentBARSizes(address)
        return entry.barSizes.filter { $0.resized != $0.original && sizes[$0.bar] == $0.resized }
    }

    /// Puts one journalled BAR back at its original size.
    func restoreBARSize(_ address: PCIAddress, _ record: BindingJournal.BARSize) throws(BindingError) {
        guard let code = ResizableBARSize.code(bytes: record.original) else {
            throw .untrustedSysfs(path: journal.path, reason: "BAR \(record.bar)'s original size \(record.original) has no size code")
        }
        try writeBARSize(address, bar: record.bar, code: code, size: record.original)
    }

    /// The device's BAR sizes from sysfs `resource`, by index; empty when unreadable.
    func currentBARSizes(_ address: PCIAddress) -> [Int: UInt64] {
        guard let bytes = SysfsReader().readBytes(devicePath(address) + "/resource", limit: 1 << 14) else { return [:] }
        let bars = parseResourceFile(String(decoding: bytes, as: UTF8.self)).bars
        return Dictionary(bars.map { ($0.index, $0.size) }, uniquingKeysWith: { first, _ in first })
    }

    /// Writes `code` to `resourceN_resize` with no driver bound, then checks `resource`.
    func writeBARSize(_ address: PCIAddress, bar: Int, code: Int, size: UInt64) throws(BindingError) {
        // The kernel rechecks under the device lock: a driver bound since the plan gets EBUSY.
        if let driver = try driver(of: address) {
            throw .refused("\(address) is bound to \(driver) now: the kernel resizes BARs only with no driver bound")
        }
        let path = devicePath(address) + "/resource\(bar)_resize"
        guard access(path, F_OK) == 0 else {
            throw .sysfsWrite(path: path, value: String(code), reason: "it does not exist: this kernel cannot resize BAR \(bar) (Linux 6.1 or later is needed)")
        }
        try write(String(code), to: path)
        let now = currentBARSizes(address)[bar]
        guard now == size else {
            throw .sysfsWrite(path: path, value: String(code),
                              reason: "the kernel took the write but BAR \(bar) is \(now.map { byteCount($0) } ?? "absent") in `resource`, not \(byteCount(size)); check `vfioctl show \(address)`")
        }
    }

    /// A bridge's prefetchable window from its `resource` file (line 16); nil when closed or unreadable.
    public func prefetchableWindow(of bridge: PCIAddress) -> ClosedRange<UInt64>? {
        guard let bytes = SysfsReader().readBytes(devicePath(bridge) + "/resource", limit: 1 << 14) else { return nil }
        return parseBridgePrefetchableWindow(String(decoding: bytes, as: UTF8.self))
    }
}
