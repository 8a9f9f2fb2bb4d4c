import PCIInventory
import TextFormat

/// What a bind or unbind will do to each device, decided before anything changes. Pure.
public struct BindPlan: Sendable {
    /// What happens to one device: bound to vfio-pci, given back, left as it is, or refused.
    public enum Action: String, Sendable {
        case bind, unbind, unchanged, refused
    }

    /// One device's part of the plan.
    public struct Step: Sendable, Equatable {
        /// The device.
        public let address: PCIAddress
        /// Its driver now; nil when none is bound.
        public let fromDriver: String?
        /// The driver it will have; nil for none.
        public let toDriver: String?
        /// What happens to it.
        public let action: Action
        /// Why (for a refusal, the safety checks' evidence).
        public let reasons: [String]
        /// The device's IDs, journalled by a bind so a later return can check the address still holds it.
        public var identity: DeviceIdentity? = nil
    }

    /// One step per device, in address order.
    public let steps: [Step]
    /// For a bind: the group's members that will still block it afterwards (without --group).
    public let remainingBlockers: [PCIAddress]
    /// The IOMMU group the plan is for; nil when the device has none.
    public let group: Int?

    /// True when any device is refused: then nothing at all is done.
    public var isRefused: Bool { steps.contains { $0.action == .refused } }

    /// Plans making `address` bind to vfio-pci at every boot (`persist add`, re-judged by
    /// `persist check`): the same safety rules as `bind`, whatever driver the device has now,
    /// since the next boot takes it from whatever drives it then. One step: refused (unless
    /// `force`), or bind/unchanged as the device is on vfio-pci now or not.
    public static func persist(_ address: PCIAddress, force: Bool, inventory: PCIInventory, facts: HostFacts) throws(BindingError) -> BindPlan {
        guard let device = inventory.device(address) else { throw .noSuchDevice(address: address.description) }
        let refusals = persistRefusals(device, facts: facts)
        let step: Step
        if !refusals.isEmpty && !force {
            step = Step(address: address, fromDriver: device.driver, toDriver: device.driver, action: .refused,
                        reasons: refusals.map(\.evidence) + ["binding it at every boot is unsafe; use --force to persist it anyway"])
        } else {
            step = Step(address: address, fromDriver: device.driver, toDriver: targetDriver,
                        action: device.driver == targetDriver ? .unchanged : .bind, reasons: refusals.map { "forced: \($0.evidence)" })
        }
        return BindPlan(steps: [step], remainingBlockers: [], group: device.iommuGroup)
    }

    /// `BindSafety`'s refusals for a boot-time binding: all of them, except that a VFIO user
    /// holding a device already on vfio-pci (a running VM) is what the binding is for.
    public static func persistRefusals(_ device: PCIDevice, facts: HostFacts) -> [Refusal] {
        let onVFIO = device.isOnVFIO
        return BindSafety.refusals(for: device, facts: facts).filter { !(onVFIO && $0.kind == .held) }
    }

    /// Plans binding `address` (or with `wholeGroup`, every endpoint of its group) to vfio-pci.
    public static func bind(_ address: PCIAddress, wholeGroup: Bool, force: Bool,
                            inventory: PCIInventory, facts: HostFacts) throws(BindingError) -> BindPlan {
        guard let device = inventory.device(address) else { throw .noSuchDevice(address: address.description) }
        guard let groupID = device.iommuGroup, let group = inventory.group(groupID) else {
            throw .noIOMMUGroup(address: address.description)
        }
        var targets: [PCIDevice] = [device]
        if wholeGroup {
            // Bridges in a group keep their port drivers; VFIO accepts that.
            targets = group.devices.compactMap { inventory.device($0) }.filter { !$0.isBridge || $0.address == address }
        }
        var steps: [Step] = []
        for target in targets {
            let refusals = BindSafety.refusals(for: target, facts: facts)
            if target.driver == targetDriver {
                steps.append(Step(address: target.address, fromDriver: target.driver, toDriver: targetDriver,
                                  action: .unchanged, reasons: ["already bound to vfio-pci"]))
            } else if !refusals.isEmpty && !force {
                steps.append(Step(address: target.address, fromDriver: target.driver, toDriver: target.driver,
                                  action: .refused, reasons: refusals.map(\.evidence) + ["use --force to bind it anyway"]))
            } else {
                steps.append(Step(address: target.address, fromDriver: target.driver, toDriver: targetDriver,
                                  action: .bind, reasons: refusals.map { "forced: \($0.evidence)" },
                                  identity: DeviceIdentity(target)))
            }
        }
        // Members that will still block the group after these binds.
        let bound = Set(steps.filter { $0.action != .refused }.map(\.address))
        let remaining = group.devices.compactMap { inventory.device($0) }.filter { member in
            !bound.contains(member.address) && GroupViability.blockReason(for: member) != nil
        }.map(\.address)
        return BindPlan(steps: steps, remainingBlockers: remaining, group: groupID)
    }

    /// Plans returning `address` (or every vfio-pci member of its group) to the original drivers
    /// recorded in the journal, judged by `returnRefusals` (refused unless `force`).
    public static func unbind(_ address: PCIAddress, wholeGroup: Bool, inventory: PCIInventory,
                              journal: [BindingJournal.Entry], facts: HostFacts = HostFacts(),
                              force: Bool = false) throws(BindingError) -> BindPlan {
        guard let device = inventory.device(address) else { throw .noSuchDevice(address: address.description) }
        var targets = [device]
        if wholeGroup, let groupID = device.iommuGroup, let group = inventory.group(groupID) {
            targets = group.devices.compactMap { inventory.device($0) }.filter { !$0.isBridge || $0.address == address }
        }
        var steps: [Step] = []
        for target in targets {
            let entry = journal.first { $0.address == target.address }
            if entry != nil || target.driver == targetDriver {
                steps.append(returnStep(target, entry: entry, facts: facts, force: force))
            } else {
                steps.append(Step(address: target.address, fromDriver: target.driver, toDriver: target.driver,
                                  action: .unchanged, reasons: ["not bound to vfio-pci"]))
            }
        }
        return BindPlan(steps: steps, remainingBlockers: [], group: device.iommuGroup)
    }

    /// Plans `vfioctl restore`: every entry left mid-change (with `all`, every entry) goes back
    /// to its original driver, judged by `returnRefusals`. Entries whose device is gone are kept.
    public static func restore(_ journal: [BindingJournal.Entry], all: Bool, inventory: PCIInventory,
                               facts: HostFacts, force: Bool) -> BindPlan {
        var steps: [Step] = []
        for entry in journal where all || !entry.state.isComplete {
            guard let device = inventory.device(entry.address) else {
                steps.append(Step(address: entry.address, fromDriver: nil, toDriver: nil, action: .unchanged,
                                  reasons: ["device is not present; its journal entry is kept"]))
                continue
            }
            steps.append(returnStep(device, entry: entry, facts: facts, force: force))
        }
        return BindPlan(steps: steps, remainingBlockers: [], group: nil)
    }

    static func returnStep(_ device: PCIDevice, entry: BindingJournal.Entry?, facts: HostFacts, force: Bool) -> Step {
        let refusals = returnRefusals(device, entry: entry, facts: facts)
        let toDriver = entry.map(\.originalDriver) ?? nil
        if !refusals.isEmpty && !force {
            return Step(address: device.address, fromDriver: device.driver, toDriver: device.driver, action: .refused,
                        reasons: refusals + ["use --force to return it anyway"])
        }
        var reasons = refusals.map { "forced: \($0)" }
        if entry == nil { reasons.append("not in the journal: the kernel will choose its driver") }
        return Step(address: device.address, fromDriver: device.driver, toDriver: toDriver, action: .unbind, reasons: reasons)
    }

    /// Why returning `device` to the driver `entry` records must not happen without --force:
    /// the address holds another device than the one journalled (or the entry cannot say), or
    /// the return would take the device from a host driver it is in use on (the rules of bind:
    /// a stale entry must not unbind the disk carrying `/`).
    public static func returnRefusals(_ device: PCIDevice, entry: BindingJournal.Entry?, facts: HostFacts) -> [String] {
        var reasons: [String] = []
        if let entry {
            let now = DeviceIdentity(device)
            switch (entry.identity, now) {
            case (let recorded?, let now?) where recorded != now:
                reasons.append("\(device.address) now holds \(now), but the journal recorded \(recorded): not the device vfioctl bound")
            case (nil, _):
                reasons.append("the journal entry for \(device.address) records no device identity, so it cannot be checked against the device there")
            case (_, nil):
                reasons.append("\(device.address) has no readable vendor and device IDs to check against the journal")
            default: break
            }
            reasons += barSizeMismatches(device, entry: entry)
        }
        // Putting a BAR back needs the device without a driver, even its original one.
        let barsPending = entry?.barSizes.contains { record in
            record.resized != record.original && device.bars.first { $0.index == record.bar }?.size == record.resized
        } ?? false
        let detaches = device.driver != nil && device.driver != targetDriver && (device.driver != entry?.originalDriver || barsPending)
        if detaches {
            reasons += BindSafety.refusals(for: device, facts: facts).map(\.evidence)
        }
        return reasons
    }

    /// Why the BAR sizes `entry` records cannot be put back on `device`: each resized BAR must
    /// be at the size vfioctl gave it (or already at its original size, after a run stopped
    /// before its write), and the kernel must still offer the original size. Pure.
    public static func barSizeMismatches(_ device: PCIDevice, entry: BindingJournal.Entry) -> [String] {
        entry.barSizes.compactMap { record -> String? in
            let name = "\(device.address) BAR \(record.bar)"
            let now = device.bars.first { $0.index == record.bar }?.size
            let recorded = "the journal records a resize from \(byteCount(record.original)) to \(byteCount(record.resized))"
            guard let now, now == record.resized || now == record.original else {
                return "\(name) is \(now.map { byteCount($0) } ?? "absent") now, but \(recorded): the device is not as vfioctl left it; check it with `vfioctl show \(device.address)` (--force returns the driver and leaves the BAR as it is)"
            }
            guard now != record.original else { return nil }
            guard let resizable = device.resizableBARs.first(where: { $0.index == record.bar }), let offered = resizable.kernelSizes else {
                return "\(name): \(recorded), but the kernel offers no resource\(record.bar)_resize now to put it back (--force returns the driver and leaves the BAR at \(byteCount(now)))"
            }
            guard offered.contains(record.original) else {
                return "\(name): \(recorded), but resource\(record.bar)_resize no longer offers \(byteCount(record.original)) (it offers \(offered.map { byteCount($0) }.joined(separator: ", "))); --force returns the driver and leaves the BAR at \(byteCount(now))"
            }
            return nil
        }
    }

    /// The driver a bind hands devices to.
    public static let targetDriver = "vfio-pci"
}
