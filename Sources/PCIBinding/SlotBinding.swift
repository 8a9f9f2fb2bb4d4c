import PCIInventory

extension BindPlan {
    /// Plans binding every function of the device's slot (`--slot`): one plan per function
    /// (per group with `wholeGroup`), since a GPU's audio or USB function may sit in another
    /// IOMMU group. Carried out all or nothing by `Binder.apply(_ plans:)`.
    public static func bindSlot(_ address: PCIAddress, wholeGroup: Bool, force: Bool,
                                inventory: PCIInventory, facts: HostFacts) throws(BindingError) -> [BindPlan] {
        guard inventory.device(address) != nil else { throw .noSuchDevice(address: address.description) }
        var plans: [BindPlan] = []
        var covered: Set<PCIAddress> = []
        for function in ([address] + inventory.companions(of: address).map(\.address)).sorted() where !covered.contains(function) {
            let plan = try bind(function, wholeGroup: wholeGroup, force: force, inventory: inventory, facts: facts)
            covered.formUnion(plan.steps.map(\.address))
            plans.append(plan)
        }
        return plans
    }
}

extension Binder {
    /// Carries out several plans (the functions of a slot, across groups) all or nothing: when
    /// a device of one plan is rolled back, every device the earlier plans bound goes back too.
    /// The caller holds the `BindingLock`.
    public func apply(_ plans: [BindPlan], resizes: [ResizableBARPlan] = []) throws(BindingError) -> [BindOutcome] {
        // A refused plan changes nothing: `apply` throws its refusal before any device moves.
        if let refused = plans.first(where: \.isRefused) { _ = try apply(refused) }
        var outcomes: [BindOutcome] = []
        for plan in plans {
            let these = try apply(plan, resizes: resizes)
            guard let failed = these.first(where: { $0.action == .rolledBack }) else {
                outcomes += these
                continue
            }
            for index in outcomes.indices.reversed() where outcomes[index].action == .bound {
                let undone = try unbind(outcomes[index].address)
                outcomes[index] = BindOutcome(address: undone.address, fromDriver: outcomes[index].fromDriver,
                                              toDriver: undone.toDriver, action: .rolledBack,
                                              reason: "undone because \(failed.address) could not be bound")
            }
            return outcomes + these
        }
        return outcomes
    }
}
