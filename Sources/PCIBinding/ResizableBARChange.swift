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
    /// (`resource` line 16) when it has one. Throws `.refused` with the numbers.
    public static func plan(_ request: ResizableBARRequest, inventory: PCIInventory,
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
        if let driver = device.driver {
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

extension Binder {
    /// Writes `plan.code` to the device's `resourceN_resize`, then checks that `resource` shows
    /// the new size. The caller holds the `BindingLock` and planned on a fresh inventory.
    public func resize(_ plan: ResizableBARPlan) throws(BindingError) {
        guard !plan.isUnchanged else { return }
        // The kernel rechecks under the device lock: a driver bound since the plan gets EBUSY.
        if let driver = try driver(of: plan.address) {
            throw .refused("\(plan.address) is bound to \(driver) now: the kernel resizes BARs only with no driver bound")
        }
        let path = devicePath(plan.address) + "/resource\(plan.bar)_resize"
        try write(String(plan.code), to: path)
        let resources = devicePath(plan.address) + "/resource"
        guard let bytes = SysfsReader().readBytes(resources, limit: 1 << 14) else {
            throw .sysfsWrite(path: resources, value: "", reason: "unreadable after the resize; check `vfioctl show \(plan.address)`")
        }
        let parsed = parseResourceFile(String(decoding: bytes, as: UTF8.self))
        let size = parsed.bars.first { $0.index == plan.bar }?.size
        guard size == plan.newSize else {
            throw .sysfsWrite(path: path, value: String(plan.code),
                              reason: "the kernel took the write but BAR \(plan.bar) is \(size.map { byteCount($0) } ?? "absent") in `resource`, not \(byteCount(plan.newSize))")
        }
    }

    /// A bridge's prefetchable window from its `resource` file (line 16); nil when closed or unreadable.
    public func prefetchableWindow(of bridge: PCIAddress) -> ClosedRange<UInt64>? {
        guard let bytes = SysfsReader().readBytes(devicePath(bridge) + "/resource", limit: 1 << 14) else { return nil }
        return parseBridgePrefetchableWindow(String(decoding: bytes, as: UTF8.self))
    }
}
