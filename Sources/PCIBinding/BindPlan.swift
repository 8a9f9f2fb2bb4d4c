import PCIInventory

/// What a bind or unbind will do to each device, decided before anything changes. Pure.
public struct BindPlan: Sendable {
    public enum Action: String, Sendable {
        case bind, unbind, unchanged, refused
    }

    public struct Step: Sendable, Equatable {
        public let address: PCIAddress
        public let fromDriver: String?
        public let toDriver: String?
        public let action: Action
        public let reasons: [String]
    }

    public let steps: [Step]
    /// For a bind: the group's members that will still block it afterwards (without --group).
    public let remainingBlockers: [PCIAddress]
    public let group: Int?

    /// True when any device is refused: then nothing at all is done.
    public var isRefused: Bool { steps.contains { $0.action == .refused } }

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
                                  action: .bind, reasons: refusals.map { "forced: \($0.evidence)" }))
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
    /// recorded in the journal.
    public static func unbind(_ address: PCIAddress, wholeGroup: Bool, inventory: PCIInventory,
                              journal: [BindingJournal.Entry]) throws(BindingError) -> BindPlan {
        guard let device = inventory.device(address) else { throw .noSuchDevice(address: address.description) }
        var targets = [device]
        if wholeGroup, let groupID = device.iommuGroup, let group = inventory.group(groupID) {
            targets = group.devices.compactMap { inventory.device($0) }.filter { !$0.isBridge || $0.address == address }
        }
        var steps: [Step] = []
        for target in targets {
            let entry = journal.first { $0.address == target.address.description }
            if let entry {
                steps.append(Step(address: target.address, fromDriver: target.driver, toDriver: entry.originalDriver,
                                  action: .unbind, reasons: []))
            } else if target.driver == targetDriver {
                // Bound by someone else: clearing the override and reprobing lets the kernel pick.
                steps.append(Step(address: target.address, fromDriver: target.driver, toDriver: nil,
                                  action: .unbind, reasons: ["not in the journal: the kernel will choose its driver"]))
            } else {
                steps.append(Step(address: target.address, fromDriver: target.driver, toDriver: target.driver,
                                  action: .unchanged, reasons: ["not bound to vfio-pci"]))
            }
        }
        return BindPlan(steps: steps, remainingBlockers: [], group: device.iommuGroup)
    }

    public static let targetDriver = "vfio-pci"
}
