import ArgumentParser
import Foundation
import PCIBinding
import PCIInventory
import TextFormat

/// Options shared by the commands that change bindings.
struct BindingOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Directory of the binding journal and lock (also: VFIOCTL_STATE_DIR).", valueName: "dir"))
    var stateDir: String?

    @Option(name: .long, help: ArgumentHelp("Seconds to wait for another vfioctl that is changing bindings (0-86400).", valueName: "seconds"))
    var lockTimeout: LockTimeout = LockTimeout(seconds: 30)

    // Roots of /dev and /proc, for tests on copied trees; not for everyday use.
    @Option(name: .long, help: .hidden) var devRoot: String = "/dev"
    @Option(name: .long, help: .hidden) var procRoot: String = "/proc"

    var journal: BindingJournal {
        BindingJournal(directory: stateDir ?? ProcessInfo.processInfo.environment["VFIOCTL_STATE_DIR"] ?? BindingJournal.defaultDirectory,
                       hooks: TestHookSeam.binding)
    }
}

/// `--lock-timeout`: a number of seconds from 0 to a day. NaN, infinities, negative and
/// absurd values are usage errors (exit 64), never a wait forever or a trap.
struct LockTimeout: ExpressibleByArgument, Equatable {
    let seconds: Double

    init(seconds: Double) { self.seconds = seconds }

    init?(argument: String) {
        guard let value = Double(argument), value.isFinite, value >= 0, value <= BindingLock.maximumTimeout else { return nil }
        seconds = value
    }

    var defaultValueDescription: String { formatSecondsForHelp(seconds) }

    static var defaultCompletionKind: CompletionKind { .default }
}

func formatSecondsForHelp(_ seconds: Double) -> String {
    seconds == seconds.rounded() && abs(seconds) < 1e15 ? String(Int64(seconds)) : String(seconds)
}

/// Exit statuses of the binding commands, documented in the README.
enum BindingExit {
    static let refused: Int32 = 3
    static let rolledBack: Int32 = 4
    /// A device did not end where it should: a failed rollback, or an unbind/restore after
    /// which a device is not on its original driver. The report says where each device is.
    static let notRestored: Int32 = 5

    /// Ends a command whose report holds these outcomes with its status (none: success).
    static func finish(_ outcomes: [BindOutcome]) throws {
        if outcomes.contains(where: { $0.action == .rollbackFailed || $0.action == .notReturned }) { throw ExitCode(BindingExit.notRestored) }
        if outcomes.contains(where: { $0.action == .refused }) { throw ExitCode(BindingExit.refused) }
        if outcomes.contains(where: { $0.action == .rolledBack }) { throw ExitCode(BindingExit.rolledBack) }
    }
}

struct OutcomeJSON: Encodable {
    let outcome: BindOutcome
    enum Keys: String, CodingKey { case address, from_driver, to_driver, action, reason, bar_changes }
    struct BARChangeJSON: Encodable { let bar: Int; let from: UInt64; let to: UInt64 }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(outcome.address, forKey: .address)
        try container.encode(outcome.fromDriver, forKey: .from_driver)
        try container.encode(outcome.toDriver, forKey: .to_driver)
        try container.encode(outcome.action.rawValue, forKey: .action)
        try container.encode(outcome.reason, forKey: .reason)
        try container.encode(outcome.barChanges.map { BARChangeJSON(bar: $0.bar, from: $0.from, to: $0.to) }, forKey: .bar_changes)
    }
}

enum BindingReport {
    static func print(_ outcomes: [BindOutcome], json: Bool) throws {
        if json {
            Swift.print(try JSONOutput.encode(outcomes.map(OutcomeJSON.init)))
            return
        }
        for outcome in outcomes {
            let from = outcome.fromDriver ?? "no driver"
            let to = outcome.toDriver ?? "no driver"
            var line = "\(outcome.address): \(outcome.action.rawValue)"
            switch outcome.action {
            case .bound, .unbound, .rolledBack, .wouldBind, .wouldUnbind: line += " (\(from) -> \(to))"
            case .unchanged, .refused: line += " (\(from))"
            case .rollbackFailed, .notReturned: line += " (now on \(to))"
            }
            if let reason = outcome.reason { line += ": \(reason)" }
            for change in outcome.barChanges { line += "; BAR \(change.bar) \(byteCount(change.from)) -> \(byteCount(change.to))" }
            Swift.print(line)
        }
    }
}

func bindingFailure(_ error: BindingError) -> CommandFailure { CommandFailure(error.description) }

struct BindCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bind",
        abstract: "Bind a device (or its whole IOMMU group) to vfio-pci, safely.",
        discussion: """
            Writes driver_override and then drivers_probe, verifies that the driver is vfio-pci and \
            /dev/vfio/<group> exists, and rolls back to the previous driver if not. The original \
            driver is journalled first (see `restore`). Refuses, unless --force, a bridge, a device \
            that carries a mounted filesystem or swap, a network interface that is up with an \
            address or route, the boot display, a framebuffer, or a device a process holds (its \
            nodes open, its BARs mapped). --slot binds every function of the device's slot.

            Exit status: 0 done, 3 refused (nothing changed), 4 rolled back, 1 other errors.

            Example:
              vfioctl bind 01:00.0 --group --dry-run
              vfioctl bind 0000:01:00.0 --group
            """
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: BindingOptions
    @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address")) var address: PCIAddress
    @Flag(help: "Bind every endpoint in the device's IOMMU group, so the group becomes viable.") var group = false
    @Flag(help: "Bind every function of the device's slot (a GPU with its audio or USB functions), across groups, all or nothing.") var slot = false
    @Flag(help: "Bind even a device the safety checks refuse.") var force = false
    @Flag(help: "Print what would happen; change nothing.") var dryRun = false
    @Option(help: ArgumentHelp("Give the device's VFIO nodes (/dev/vfio/GROUP, and its /dev/vfio/devices file) to this user, mode 0600, so a VMM run as that user opens it and no other user can; the group defaults to the user's own. `unbind` and `restore` give them back to root.", valueName: "user[:group]"))
    var owner: String?
    @Option(help: ArgumentHelp("Also resize the device's resizable BARs (PCIe Resizable BAR) while no driver holds it: a power of two of at least 1M, or max; the old sizes are journalled and `unbind` puts them back.", valueName: "size"))
    var rebar: RebarSize?
    @Option(help: ArgumentHelp("With --rebar: the BAR to resize (default: each resizable BAR for max; the only one for a size).", valueName: "n"))
    var rebarBar: BARIndex?

    func validate() throws {
        if rebarBar != nil && rebar == nil { throw ValidationError("--rebar-bar goes with --rebar") }
        if rebar != nil && slot { throw ValidationError("--rebar resizes the named device: use it without --slot") }
    }

    func run() throws {
        let target = address
        let root = global.resolvedRoot
        // An unknown user stops the run before anything changes.
        let nodeOwner = try owner.map(OwnerArgument.resolve)
        let inventory = try InventoryLoader.load(global, detail: .full)
        let facts = HostFactsReader(sysfs: root, procRoot: options.procRoot).read()
        let plans: [BindPlan]
        do {
            plans = slot ? try BindPlan.bindSlot(target, wholeGroup: group, force: force, inventory: inventory, facts: facts)
                : [try BindPlan.bind(target, wholeGroup: group, force: force, inventory: inventory, facts: facts)]
        } catch { throw bindingFailure(error) }

        if plans.contains(where: \.isRefused) {
            try BindingReport.print(plans.flatMap(BindingReport.refusedOutcomes), json: global.json)
            throw ExitCode(BindingExit.refused)
        }
        let binder = Binder(root: root, devRoot: options.devRoot, journal: options.journal, hooks: TestHookSeam.binding)
        var resizes: [ResizableBARPlan] = []
        if let rebar {
            do {
                resizes = try ResizableBARPlanner.planForBind(target, size: rebar.value, bar: rebarBar?.value, inventory: inventory,
                                                              bridgeWindow: binder.prefetchableWindow(of:))
            } catch .refused(let reason) {
                let device = inventory.device(target)
                try BindingReport.print([BindOutcome(address: target.description, fromDriver: device?.driver, toDriver: device?.driver,
                                                     action: .refused, reason: reason)], json: global.json)
                throw ExitCode(BindingExit.refused)
            } catch { throw bindingFailure(error) }
        }
        if dryRun {
            let outcomes = plans.flatMap(\.steps).map { step in
                BindOutcome(address: step.address.description, fromDriver: step.fromDriver, toDriver: step.toDriver,
                            action: step.action == .bind ? .wouldBind : .unchanged,
                            reason: step.reasons.isEmpty ? nil : step.reasons.joined(separator: "; "),
                            barChanges: step.action == .bind ? resizes.filter { $0.address == step.address && !$0.isUnchanged }
                                .map { BindOutcome.BARChange(bar: $0.bar, from: $0.currentSize, to: $0.newSize) } : [])
            }
            try BindingReport.print(outcomes, json: global.json)
            if let nodeOwner, !global.json { print("would give the VFIO nodes to \(nodeOwner), mode 0600") }
            plans.forEach { reportRemaining($0, json: global.json) }
            return
        }

        let outcomes: [BindOutcome]
        var nodes: [String] = []
        var ownerFailure: BindingError?
        do {
            // Permission problems first, before the lock (whose directory a non-root user
            // cannot create either): the error then says what to do.
            try binder.checkPreconditions(for: plans.flatMap(\.steps).filter { $0.action == .bind }.map(\.address.description))
            let lock = try BindingLock(directory: options.journal.directory, timeout: options.lockTimeout.seconds, hooks: TestHookSeam.binding)
            defer { withExtendedLifetime(lock) {} }
            outcomes = try binder.apply(plans, resizes: resizes)
            // Only once every device is on vfio-pci: a rolled-back bind has no node to give.
            if let nodeOwner, !outcomes.contains(where: { ![.bound, .unchanged].contains($0.action) }) {
                let onVFIO = outcomes.filter { $0.toDriver == BindPlan.targetDriver }.compactMap { try? PCIAddress(parsing: $0.address) }
                do { nodes = try binder.giveNodes(of: onVFIO, to: nodeOwner) } catch { ownerFailure = error }
            }
        } catch { throw bindingFailure(error) }
        try BindingReport.print(outcomes, json: global.json)
        if let ownerFailure {
            throw CommandFailure("the devices are bound, but their VFIO nodes stay root's: \(ownerFailure.description); run `vfioctl bind \(target) --owner \(owner ?? "")` again once that is fixed")
        }
        if let nodeOwner, !nodes.isEmpty {
            let line = "VFIO nodes given to \(nodeOwner), mode 0600: \(nodes.joined(separator: " "))"
            if global.json { warn(line) } else { print(line) }
        }
        try BindingExit.finish(outcomes)
        plans.forEach { reportRemaining($0, json: global.json) }
    }

    func reportRemaining(_ plan: BindPlan, json: Bool) {
        guard !plan.remainingBlockers.isEmpty, let groupID = plan.group else { return }
        let names = plan.remainingBlockers.map(\.description).joined(separator: " ")
        let line = "group \(groupID) is still not viable: also bind \(names), or use --group"
        if json { warn("note: " + line) } else { print("note: " + line) }
    }
}

struct UnbindCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unbind",
        abstract: "Return a device (or its group) from vfio-pci to the driver it had before.",
        discussion: """
            Uses the journal written by `bind`: clears driver_override and binds the original \
            driver. A device vfioctl did not bind is reprobed and the kernel chooses its driver. \
            Refuses, unless --force, a device that is not the one journalled (vendor, device and \
            subsystem IDs) and a return that would take a device in use from a host driver (the \
            checks of `bind`).

            Exit status: 0 done, 3 refused (nothing changed), 5 a device is not back on its \
            driver (the report says where it is), 1 other errors.

            Example:
              vfioctl unbind 01:00.0 --group
            """
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: BindingOptions
    @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address")) var address: PCIAddress
    @Flag(help: "Return every vfio-pci member of the device's IOMMU group.") var group = false
    @Flag(help: "Return a device even if the safety or identity checks refuse it, or a process holds it (a running VM).") var force = false
    @Flag(help: "Print what would happen; change nothing.") var dryRun = false

    func run() throws {
        let target = address
        let inventory = try InventoryLoader.load(global, detail: .full)
        let facts = HostFactsReader(sysfs: global.resolvedRoot, procRoot: options.procRoot).read()
        let journal = options.journal
        let binder = Binder(root: global.resolvedRoot, devRoot: options.devRoot, journal: journal, hooks: TestHookSeam.binding)
        let plan: BindPlan
        do {
            plan = try BindPlan.unbind(target, wholeGroup: group, inventory: inventory, journal: try journal.entries(),
                                       facts: facts, force: force)
        } catch { throw bindingFailure(error) }
        // A process holding the device (a VM with its group open) would make the driver's
        // remove wait for it: refuse before anything changes.
        let holders = HolderReader(sysfs: global.resolvedRoot, procRoot: options.procRoot, devRoot: options.devRoot)
            .holders(of: plan.steps.filter { $0.action == .unbind }.map(\.address))
        let judged = plan.refusingHeld(holders, force: force)
        if judged.isRefused, !plan.isRefused {
            try BindingReport.print(BindingReport.refusedOutcomes(judged), json: global.json)
            throw ExitCode(BindingExit.refused)
        }
        let outcomes: [BindOutcome]
        do {
            outcomes = try ReturnRun(binder: binder, options: options, dryRun: dryRun).carryOut(plan)
        } catch { throw bindingFailure(error) }
        try BindingReport.print(outcomes, json: global.json)
        try BindingExit.finish(outcomes)
    }
}

/// Carries out an unbind or restore plan: refused steps change nothing at all; the rest go back
/// to their original drivers under the lock.
struct ReturnRun {
    let binder: Binder
    let options: BindingOptions
    let dryRun: Bool

    func carryOut(_ plan: BindPlan, describe: (BindPlan.Step, BindOutcome) -> BindOutcome = { $1 }) throws(BindingError) -> [BindOutcome] {
        if plan.isRefused || dryRun {
            return plan.steps.map { step in
                let action: BindOutcome.Action = switch step.action {
                case .refused: .refused
                case .unbind: plan.isRefused ? .unchanged : .wouldUnbind
                default: .unchanged
                }
                let reason: String? = step.action == .refused ? step.reasons.joined(separator: "; ")
                    : plan.isRefused && step.action == .unbind ? "not changed: another device was refused" : step.reasons.first
                return BindOutcome(address: step.address.description, fromDriver: step.fromDriver,
                                   toDriver: action == .wouldUnbind ? step.toDriver : step.fromDriver, action: action, reason: reason)
            }
        }
        let toReturn = plan.steps.filter { $0.action == .unbind }.map(\.address)
        guard !toReturn.isEmpty else { return plan.steps.map(Binder.unchangedOutcome) }
        try binder.checkPreconditions(for: toReturn.map(\.description))
        let lock = try BindingLock(directory: binder.journal.directory, timeout: options.lockTimeout.seconds, hooks: TestHookSeam.binding)
        defer { withExtendedLifetime(lock) {} }
        let returned = Dictionary(try binder.returnToOriginal(toReturn).map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
        return plan.steps.map { step in
            guard let outcome = returned[step.address.description] else {
                return Binder.unchangedOutcome(step)
            }
            return describe(step, outcome)
        }
    }
}

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Replay the binding journal: return devices left mid-change (or, with --all, every journalled device) to their original drivers.",
        discussion: """
            After an interrupted bind or unbind (a crash, a kill, a power cut of a long script), \
            `vfioctl restore` finishes the job: each device whose change was in progress goes back \
            to the driver recorded before vfioctl touched it. With --all, devices that were bound \
            successfully go back too. Each entry is checked first as `unbind` checks it: the \
            address must still hold the journalled device, and a device in use on a host driver \
            is not taken from it (--force overrides both).

            Exit status: 0 done, 3 refused (nothing changed), 5 a device is not back on its \
            driver (the report says where it is), 1 other errors.

            Example:
              vfioctl restore --all --dry-run
            """
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: BindingOptions
    @Flag(help: "Also return devices whose bind completed.") var all = false
    @Flag(help: "Return a device even if the safety or identity checks refuse it.") var force = false
    @Flag(help: "Print what would happen; change nothing.") var dryRun = false

    func run() throws {
        let journal = options.journal
        let inventory = try InventoryLoader.load(global, detail: .full)
        let facts = HostFactsReader(sysfs: global.resolvedRoot, procRoot: options.procRoot).read()
        let binder = Binder(root: global.resolvedRoot, devRoot: options.devRoot, journal: journal, hooks: TestHookSeam.binding)
        let outcomes: [BindOutcome]
        do {
            let entries = try journal.entries()
            let plan = BindPlan.restore(entries, all: all, inventory: inventory, facts: facts, force: force)
            outcomes = try ReturnRun(binder: binder, options: options, dryRun: dryRun).carryOut(plan) { step, outcome in
                guard outcome.action == .unbound, let entry = entries.first(where: { $0.address == step.address }) else { return outcome }
                return BindOutcome(address: outcome.address, fromDriver: outcome.fromDriver, toDriver: outcome.toDriver,
                                   action: .unbound, reason: "restored (journal state \(entry.state.rawValue))" + (outcome.reason.map { "; \($0)" } ?? ""),
                                   barChanges: outcome.barChanges)
            }
        } catch { throw bindingFailure(error) }
        if outcomes.isEmpty && !global.json {
            print("nothing to restore" + (all ? "" : " (devices bound successfully stay; use --all to return them too)"))
            return
        }
        try BindingReport.print(outcomes, json: global.json)
        try BindingExit.finish(outcomes)
    }
}

struct PersistCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "persist",
        abstract: "Make a vfio-pci binding survive reboot and hot-plug with a udev rule keyed on the address.",
        discussion: """
            Rules go to /etc/udev/rules.d/90-vfioctl-<address>.rules (--rules-dir moves \
            them). `add --early` also binds the device from the initramfs, before its native \
            driver can load (initramfs-tools or dracut); `remove` undoes that too.

            Examples:
              vfioctl persist add 0000:01:00.0
              vfioctl persist add 0000:01:00.0 --early --update-initramfs
              vfioctl persist list --json
              vfioctl persist remove 01:00.0 --rules-dir /tmp/rules
            """,
        subcommands: [Add.self, Remove.self, List.self, Check.self]
    )

    struct RulesOptions: ParsableArguments {
        @Option(name: .long, help: ArgumentHelp("Where udev rules go.", valueName: "dir"))
        var rulesDir: String = UdevRules.defaultDirectory
        @Option(name: .long, help: ArgumentHelp("Root of the early-binding files: modprobe.d, the initramfs hooks, /boot (default /).", valueName: "dir"))
        var configRoot: String = "/"
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the udev rule for a device.",
            discussion: """
                Refuses, unless --force, what `bind` refuses (a bridge, the disk of a mounted \
                filesystem or swap, a network interface in use, the boot display, a framebuffer, a \
                device a process holds): the next boot would take it without asking.

                Exit status: 0 done, 3 refused (nothing written), 1 other errors.

                Example:
                  vfioctl persist add 01:00.0
                """)
        @OptionGroup var global: GlobalOptions
        @OptionGroup var rules: RulesOptions
        @Argument(help: ArgumentHelp("The device.", valueName: "address")) var address: PCIAddress
        @Flag(help: "Also bind it from the initramfs, before its native driver loads: driver_override set there, a softdep that loads vfio-pci first, vfio-pci in the initramfs.")
        var early = false
        @Option(name: .long, help: ArgumentHelp("With --early: the host's initramfs tool (default: detected).", valueName: "tool"))
        var initramfs: InitramfsTool?
        @Flag(help: "With --early: regenerate the initramfs now (otherwise the command to run is printed).")
        var updateInitramfs = false
        @Flag(help: "Persist even a device the safety checks refuse (as `bind --force`), or one that another mechanism (driverctl, a udev rule, pci-stub.ids=) binds to another driver at boot; that one is left in place and named.")
        var force = false
        @Option(help: ArgumentHelp("Also give the device's VFIO nodes to this user at every boot (udev OWNER=, GROUP=, MODE=0600); the group defaults to the user's own.", valueName: "user[:group]"))
        var owner: String?
        @OptionGroup var options: BindingOptions

        func validate() throws {
            if !early && (initramfs != nil || updateInitramfs) { throw ValidationError("--initramfs and --update-initramfs go with --early") }
            // The tool rebuilds this host's initramfs, not one under another root.
            if updateInitramfs && rules.configRoot != "/" { throw ValidationError("--update-initramfs rebuilds this host's initramfs: use it without --config-root") }
        }

        func run() throws {
            let target = address
            let nodeOwner = try owner.map(OwnerArgument.resolve)
            let inventory = try InventoryLoader.load(global, detail: .full)
            guard let device = inventory.device(target) else {
                throw CommandFailure("no PCI device \(target); run `vfioctl list` to see the devices")
            }
            // The boot binds it without asking: the same safety rules as `bind`, before anything is written.
            let facts = HostFactsReader(sysfs: global.resolvedRoot, procRoot: options.procRoot).read()
            let plan: BindPlan
            do { plan = try BindPlan.persist(target, force: force, inventory: inventory, facts: facts) } catch { throw bindingFailure(error) }
            if plan.isRefused {
                try BindingReport.print(BindingReport.refusedOutcomes(plan), json: global.json)
                throw ExitCode(BindingExit.refused)
            }
            let leftInPlace = try checkOtherBootBindings(inventory)
            var early: EarlyReport?
            if self.early {
                early = try addEarly(device)
            }
            let udev = UdevRules(directory: rules.rulesDir)
            let written: Bool
            do { written = try udev.add(target, owner: nodeOwner) } catch { throw bindingFailure(error) }
            if rules.rulesDir == UdevRules.defaultDirectory { UdevRules.reload() }
            try report(target, path: udev.path(for: target), action: written ? "added" : "unchanged", json: global.json, early: early)
            if let nodeOwner {
                let line = "  VFIO nodes for \(nodeOwner) only (mode 0600) from the next boot or hot-plug; now: `vfioctl bind \(target) --owner \(nodeOwner)`"
                if global.json { warn(line) } else { print(line) }
            }
            for source in leftInPlace {
                let line = "  left in place: \(BootBindingLoader.text(source))"
                if global.json { warn(line) } else { print(line) }
            }
            if let early, early.regenerated == false { throw CommandFailure("`\(early.command)` failed; the files are written, run it again") }
        }

        /// Refuses when another boot-time mechanism binds the device to another driver (the two
        /// would race at every boot), unless --force; returns what else binds it, to be named.
        func checkOtherBootBindings(_ inventory: PCIInventory) throws -> [BootBindingSource] {
            let plan = BootBindingLoader.plan(configRoot: rules.configRoot, procRoot: options.procRoot, rulesDirectory: rules.rulesDir, inventory: inventory)
            let blockers = plan.blockersForPersistAdd(address)
            if !blockers.isEmpty && !force {
                let list = blockers.map(BootBindingLoader.text).joined(separator: "; ")
                throw CommandFailure("\(address) is already bound at boot to another driver by \(list); a vfioctl rule would race it at every boot. Remove that binding first (driverctl: `driverctl unset-override \(address)`; ids=: drop the ID), or pass --force to add the rule and leave it in place")
            }
            return plan.othersBinding(address)
        }

        /// Writes the early-binding files with this device added to the record.
        func addEarly(_ device: PCIDevice) throws -> EarlyReport {
            let store = EarlyBindingStore(configRoot: rules.configRoot)
            let record: EarlyBindingRecord?
            do { record = try store.record() } catch { throw bindingFailure(error) }
            guard let tool = initramfs ?? record?.tool ?? store.detectTool() else {
                throw CommandFailure("cannot tell which initramfs tool this host uses (update-initramfs and dracut both, or neither, found under \(rules.configRoot)); name it with --initramfs initramfs-tools|dracut")
            }
            let module = nativeModule(of: device)
            var devices = (record?.devices ?? []).filter { $0.address != device.address }
            devices.append(EarlyDevice(address: device.address, nativeModule: module))
            let paths: [String]
            do { paths = try store.apply(devices, tool: tool) } catch { throw bindingFailure(error) }
            let command = tool.regenerateCommand.joined(separator: " ")
            var regenerated: Bool?
            if updateInitramfs { regenerated = store.regenerate(tool) == 0 }
            return EarlyReport(tool: tool, nativeModule: module, files: paths, command: command, regenerated: regenerated)
        }

        /// The module of the driver that takes the device when vfio-pci does not: its driver now,
        /// or the one the journal recorded; nil for none or a built-in driver (no module link).
        func nativeModule(of device: PCIDevice) -> String? {
            let recorded = (try? options.journal.entry(for: device.address)) ?? nil
            guard let driver = device.driver == BindPlan.targetDriver ? recorded?.originalDriver : device.driver,
                  BindingValidation.driverNameProblem(driver) == nil else { return nil }
            let link = global.resolvedRoot.appending("bus/pci/drivers/\(driver)/module")
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: link) else { return nil }
            let name = (target as NSString).lastPathComponent
            return EarlyBindingPlan.isValidModuleName(name) ? name : nil
        }
    }

    struct EarlyReport {
        let tool: InitramfsTool
        let nativeModule: String?
        let files: [String]
        let command: String
        /// nil: not run (--update-initramfs not given).
        let regenerated: Bool?
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete the udev rule for a device.",
                                                        discussion: "Example:\n  vfioctl persist remove 01:00.0")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var rules: RulesOptions
        @Argument(help: ArgumentHelp("The device.", valueName: "address")) var address: PCIAddress
        @Flag(help: "Regenerate the initramfs now when the device was bound early (otherwise the command to run is printed).")
        var updateInitramfs = false
        func run() throws {
            let target = address
            // The early-binding files first: they are the part a failure must not leave behind.
            let store = EarlyBindingStore(configRoot: rules.configRoot)
            var early: EarlyReport?
            do {
                var record = try store.record()
                if let current = record, current.devices.contains(where: { $0.address == target }) {
                    let module = current.devices.first { $0.address == target }?.nativeModule
                    let paths = try store.apply(current.devices.filter { $0.address != target }, tool: current.tool)
                    let regenerated = updateInitramfs ? store.regenerate(current.tool) == 0 : nil
                    early = EarlyReport(tool: current.tool, nativeModule: module, files: paths,
                                        command: current.tool.regenerateCommand.joined(separator: " "), regenerated: regenerated)
                    record = try store.record()
                }
                // Files of ours that name the device with no record (a change that failed or was
                // killed half-way): rewrite what the record still lists, delete the rest.
                let unrecorded = store.unrecordedFiles(naming: target, record: record)
                if !unrecorded.isEmpty {
                    if let record { _ = try store.apply(record.devices, tool: record.tool) }
                    let removed = try store.removeUnrecorded(store.unrecordedFiles(naming: target, record: record))
                    for path in removed { warn("\(target): removed early-binding file without a record: \(path)") }
                    if early == nil, !removed.isEmpty {
                        let tool = record?.tool ?? store.detectTool() ?? .initramfsTools
                        early = EarlyReport(tool: tool, nativeModule: nil, files: record.map { $0.files.map(store.absolute) } ?? [],
                                            command: tool.regenerateCommand.joined(separator: " "),
                                            regenerated: updateInitramfs ? store.regenerate(tool) == 0 : nil)
                    }
                }
            } catch { throw bindingFailure(error) }
            let udev = UdevRules(directory: rules.rulesDir)
            let removed: Bool
            var sriovRemoved = false
            do {
                removed = try udev.remove(target)
                sriovRemoved = try udev.removeSRIOV(target)
            } catch { throw bindingFailure(error) }
            if rules.rulesDir == UdevRules.defaultDirectory { UdevRules.reload() }
            if sriovRemoved && !global.json { print("\(target): VF count rule removed (\(udev.sriovPath(for: target)))") }
            try report(target, path: udev.path(for: target), action: removed || early != nil || sriovRemoved ? "removed" : "absent", json: global.json, early: early)
            if let early, early.regenerated == false { throw CommandFailure("`\(early.command)` failed; the files are removed, run it again") }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List devices bound at boot: vfioctl's udev rules, and every other way the host binds them.",
            discussion: """
                Besides vfioctl's rules and early binding, lists what else binds devices at boot, \
                read without changing it: vfio-pci.ids=, vfio_pci.ids= and pci-stub.ids= on the \
                kernel command line, `options vfio-pci ids=` in modprobe.d, driverctl overrides \
                (/etc/driverctl.d) and udev rules that set driver_override; each with the file \
                (and line) it is written in, then any conflict.

                Examples:
                  vfioctl persist list
                  vfioctl persist list --json
                """)
        @OptionGroup var global: GlobalOptions
        @OptionGroup var rules: RulesOptions
        @Option(name: .long, help: .hidden) var procRoot: String = "/proc"
        func run() throws {
            let udev = UdevRules(directory: rules.rulesDir)
            let addresses = udev.list()
            let record: EarlyBindingRecord?
            do { record = try EarlyBindingStore(configRoot: rules.configRoot).record() } catch { throw bindingFailure(error) }
            let early = Set(record?.devices.map(\.address) ?? [])
            let inventory = try? InventoryLoader.load(global, detail: .summary)
            let plan = BootBindingLoader.plan(configRoot: rules.configRoot, procRoot: procRoot, rulesDirectory: rules.rulesDir, inventory: inventory)
            let others = plan.bindings.keys.sorted().compactMap { address -> (PCIAddress, [BootBindingSource])? in
                let sources = plan.othersBinding(address)
                return sources.isEmpty ? nil : (address, sources)
            }
            if global.json {
                let ours: [JSONValue] = addresses.map { address in
                    .object([("address", .string(address.description)), ("mechanism", .string(BootBindingMechanism.vfioctlRule.rawValue)),
                             ("rule", .string(udev.path(for: address))),
                             ("early", .optional(early.contains(address) ? record?.tool.rawValue : nil)),
                             ("driver", .string(BindPlan.targetDriver)), ("file", .string(udev.path(for: address))), ("line", .null)])
                }
                let theirs: [JSONValue] = others.flatMap { address, sources in
                    sources.map { source in
                        .object([("address", .string(address.description)), ("mechanism", .string(source.mechanism.rawValue)),
                                 ("rule", .null), ("early", .null), ("driver", .string(source.driver)),
                                 ("file", .string(source.location.file)), ("line", .optional(source.location.line))])
                    }
                }
                JSONValue.array(ours + theirs).printToStandardOutput()
                for finding in plan.findings { warn("\(finding)") }
                return
            }
            if addresses.isEmpty {
                print("no vfioctl udev rules in \(rules.rulesDir)")
            } else {
                for address in addresses {
                    print("\(address)  \(udev.path(for: address))" + (early.contains(address) ? "  early (\(record?.tool.rawValue ?? ""))" : ""))
                }
            }
            if !others.isEmpty {
                print("bound at boot by other means:")
                for (address, sources) in others {
                    for source in sources { print("\(address)  \(BootBindingLoader.text(source))") }
                }
            }
            for finding in plan.findings { print(finding) }
        }
    }

    static func report(_ address: PCIAddress, path: String, action: String, json: Bool, early: EarlyReport? = nil) throws {
        if json {
            var fields: [(String, JSONValue)] = [("address", .string(address.description)), ("rule", .string(path)), ("action", .string(action))]
            if let early {
                fields.append(("early", .object([
                    ("initramfs", .string(early.tool.rawValue)), ("native_module", .optional(early.nativeModule)),
                    ("files", .array(early.files.map { .string($0) })), ("regenerate", .string(early.command)),
                    ("regenerated", .optional(early.regenerated)),
                ])))
            }
            JSONValue.object(fields).printToStandardOutput()
        } else {
            print("\(address): rule \(action) (\(path))")
            if let early {
                let softdep = early.nativeModule.map { "softdep \($0) pre: vfio-pci" } ?? "no softdep (no modular native driver known)"
                print("  early binding (\(early.tool.rawValue)): driver_override from the initramfs, \(softdep)")
                for file in early.files { print("  wrote \(file)") }
                if early.files.isEmpty { print("  no device is bound early any more: every early-binding file removed") }
                switch early.regenerated {
                case nil: print("  rebuild the initramfs for it to take effect: \(early.command)")
                case true?: print("  initramfs rebuilt (\(early.command))")
                case false?: break
                }
            }
        }
    }
}


/// `--initramfs initramfs-tools|dracut`.
extension InitramfsTool: ExpressibleByArgument {}

/// `--owner USER[:GROUP]`, looked up in this host's accounts.
enum OwnerArgument {
    static func resolve(_ text: String) throws -> NodeOwner {
        switch NodeOwner.parse(text) {
        case .success(let owner): return owner
        case .failure(let error): throw CommandFailure("--owner \(text): \(error.description); nothing was changed")
        }
    }
}
