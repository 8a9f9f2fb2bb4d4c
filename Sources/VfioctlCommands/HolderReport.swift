import PCIBinding
import PCIInventory

extension BindingReport {
    /// What a refused plan reports: each refused device with its evidence, the others unchanged.
    static func refusedOutcomes(_ plan: BindPlan) -> [BindOutcome] {
        plan.steps.map { step in
            BindOutcome(address: step.address.description, fromDriver: step.fromDriver, toDriver: step.fromDriver,
                        action: step.action == .refused ? .refused : .unchanged,
                        reason: step.action == .refused ? step.reasons.joined(separator: "; ") : "not changed: another device was refused")
        }
    }
}

enum HolderReport {
    /// `show`'s lines for a device's holders.
    static func lines(_ holders: [Holder]) -> [String] {
        guard !holders.isEmpty else { return ["  Held by:         nobody (no process has its nodes open or its BARs mapped)"] }
        return ["  Held by:"] + holders.map { "    \($0)" }
    }

    static func json(_ holders: [Holder]) -> JSONValue {
        .array(holders.map { .object([("pid", .integer(Int($0.pid))), ("command", .string($0.command)), ("what", .string($0.what))]) })
    }
}
