import ArgumentParser
import Foundation
import PCIBinding
import PCIInventory

/// `vfioctl sriov`: create (or remove) a PF's virtual functions and hand them to vfio-pci.
struct SRIOVCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sriov",
        abstract: "Set a physical function's VF count and bind the VFs to vfio-pci, all or nothing.",
        discussion: """
            Turns sriov_drivers_autoprobe off first (so no host driver grabs the new VFs), writes
            sriov_numvfs (through 0 when changing a non-zero count), binds every VF to vfio-pci
            and restores autoprobe. If a VF cannot be bound, the others are returned and the
            count goes back to 0. --vfs 0 removes the VFs. Refused, nothing changed: a PF without
            SR-IOV, a count above sriov_totalvfs, VFs in use by a host driver or a VM.

            Exit status: 0 done, 3 refused (VFs in use), 4 undone, 1 other errors.

            Examples:
              vfioctl sriov 0000:03:00.0 --vfs 4
              vfioctl sriov 03:00.0 --vfs 0 --json
            """
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: BindingOptions
    @Argument(help: ArgumentHelp("The physical function, DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address")) var address: PCIAddress
    @Option(name: .long, help: ArgumentHelp("How many VFs to have (0 removes them).", valueName: "n")) var vfs: NonNegativeCount
    @Flag(help: "Print what would happen; change nothing.") var dryRun = false

    func run() throws {
        let target = address
        let inventory = try InventoryLoader.load(global, detail: .full)
        let plan: SRIOVPlan
        do {
            let groups = Set(inventory.devices.compactMap { device -> Int? in
                guard device.physicalFunction == target, let group = device.iommuGroup else { return nil }
                return vfioGroupIsOpen(group, devRoot: options.devRoot) ? group : nil
            })
            plan = try SRIOVPlan.plan(target, requested: vfs.value, inventory: inventory, groupsInUse: groups)
        } catch .refused(let evidence) {
            warn("Error: " + BindingError.refused(evidence).description)
            throw ExitCode(BindingExit.refused)
        } catch { throw bindingFailure(error) }

        let change = "\(target): \(plan.current) -> \(plan.requested) VFs (of \(plan.total))"
        if plan.isUnchanged || dryRun {
            let what = plan.isUnchanged ? "unchanged"
                : plan.requested == 0 ? "would remove every VF"
                : "would set" + (plan.resetsFirst ? " (through 0)" : "") + " and bind every VF to vfio-pci"
            report(change + ": " + what, vfs: [], outcomes: [], failed: nil)
            return
        }
        let binder = Binder(root: global.resolvedRoot, devRoot: options.devRoot, journal: options.journal)
        let result: SRIOVConfigurator.Result
        do {
            let lock = try BindingLock(directory: options.journal.directory, timeout: options.lockTimeout.seconds)
            defer { withExtendedLifetime(lock) {} }
            result = try SRIOVConfigurator(binder: binder).apply(plan) { () throws(BindingError) -> PCIInventory in
                do { return try InventoryLoader.load(global, detail: .full) } catch {
                    throw BindingError.sriov("cannot rescan the devices after creating VFs: \(error)")
                }
            }
        } catch { throw bindingFailure(error) }
        report(change, vfs: result.virtualFunctions, outcomes: result.outcomes, failed: result.failed)
        if result.failed != nil { throw ExitCode(BindingExit.rolledBack) }
    }

    func report(_ summary: String, vfs: [PCIAddress], outcomes: [BindOutcome], failed: String?) {
        if global.json {
            let items: [JSONValue] = outcomes.map { outcome in
                .object([("address", .string(outcome.address)), ("from_driver", .optional(outcome.fromDriver)),
                         ("to_driver", .optional(outcome.toDriver)), ("action", .string(outcome.action.rawValue)),
                         ("reason", .optional(outcome.reason))])
            }
            JSONValue.object([("summary", .string(summary)), ("virtfns", .array(vfs.map { .string($0.description) })),
                              ("outcomes", .array(items)), ("failed", .optional(failed))]).printToStandardOutput()
        } else {
            print(summary)
            for outcome in outcomes {
                print("  \(outcome.address): \(outcome.action.rawValue) (\(outcome.fromDriver ?? "no driver") -> \(outcome.toDriver ?? "no driver"))" + (outcome.reason.map { ": \($0)" } ?? ""))
            }
            if let failed { print("failed: \(failed)") }
        }
    }
}
