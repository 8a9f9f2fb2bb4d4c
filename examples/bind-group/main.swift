// Binds every device of a PCI device's IOMMU group to vfio-pci and gives each back to the
// driver it had, with the PCIBinding library the way `vfioctl bind --group` / `unbind --group`
// use it: the plan is decided first (safety refusals change nothing), the binding lock keeps
// other runs out, the journal records each original driver before it is touched, and the group
// bind is all or nothing.
//
//   bind-group ADDRESS [--keep]     (as root; --keep leaves the group bound)
//
// Prints one JSON object: the drivers before, after binding (and whether VFIO can now use the
// group), and after restoring. Exit status 0 done, 3 refused (nothing changed), 1 error.
import Foundation
import PCIBinding
import PCIInventory

struct Report: Encodable {
    var address: String
    var group: Int?
    var before: [String: String] = [:]
    var bound: [String: String] = [:]
    var viableAfterBind = false
    var restored: [String: String] = [:]
    var refusals: [String] = []
}

func fail(_ message: String, status: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("bind-group: \(message)\n".utf8))
    exit(status)
}

let arguments = Array(CommandLine.arguments.dropFirst())
guard let text = arguments.first(where: { !$0.hasPrefix("--") }), let address = try? PCIAddress(parsing: text) else {
    fail("usage: bind-group ADDRESS [--keep]   (ADDRESS like 0000:01:00.0)", status: 2)
}
let keep = arguments.contains("--keep")
let root = SysfsRoot.resolve(option: nil, environment: ProcessInfo.processInfo.environment)
let encoder = JSONEncoder()
encoder.outputFormatting = [.prettyPrinted, .sortedKeys]

/// Each member's driver, by address ("none" for no driver).
func drivers(of group: Int) throws -> [String: String] {
    let inventory = try PCIInventory.scan(root: root, detail: .summary, names: nil)
    var result: [String: String] = [:]
    for member in inventory.group(group)?.devices ?? [] { result[member.description] = inventory.device(member)?.driver ?? "none" }
    return result
}

do {
    let inventory = try PCIInventory.scan(root: root, detail: .full, names: nil)
    let facts = HostFactsReader(sysfs: root).read()
    let plan = try BindPlan.bind(address, wholeGroup: true, force: false, inventory: inventory, facts: facts)
    var report = Report(address: address.description, group: plan.group)
    guard let group = plan.group else { fail("\(address) has no IOMMU group") }
    report.before = try drivers(of: group)
    if plan.isRefused {
        report.refusals = plan.steps.filter { $0.action == .refused }.map { "\($0.address): \($0.reasons.joined(separator: "; "))" }
        FileHandle.standardError.write(Data("bind-group: refused, nothing was changed\n".utf8))
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
        exit(3)
    }

    let journal = BindingJournal()
    let binder = Binder(root: root, journal: journal)
    do {
        // One lock for the whole change, so no other vfioctl interleaves with it.
        let lock = try BindingLock(directory: journal.directory, timeout: 30)
        defer { withExtendedLifetime(lock) {} }
        let outcomes = try binder.apply(plan)
        if let failed = outcomes.first(where: { $0.action == .rolledBack || $0.action == .rollbackFailed }) {
            fail("\(failed.address) could not be bound (\(failed.reason ?? "?")); the group was rolled back")
        }
        report.bound = try drivers(of: group)
        let after = try PCIInventory.scan(root: root, detail: .summary, names: nil)
        report.viableAfterBind = after.group(group)?.isViable ?? false
        if !keep {
            // Give back only what this run bound; the journal knows each original driver.
            for outcome in outcomes.reversed() where outcome.action == .bound {
                let back = try binder.unbind(outcome.address)
                if back.action != .unbound { fail("\(outcome.address): \(back.reason ?? "not restored")") }
            }
        }
    }
    report.restored = try drivers(of: group)
    print(String(decoding: try encoder.encode(report), as: UTF8.self))
} catch {
    fail("\(error)")
}
