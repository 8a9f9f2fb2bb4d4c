import ArgumentParser
import Foundation
import PCIBinding
import PCIInventory
import VFIO

/// `vfioctl sriov`: create (or remove) a PF's virtual functions and hand them to vfio-pci.
struct SRIOVCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sriov",
        abstract: "Set a physical function's VF count and bind the VFs to vfio-pci, all or nothing.",
        discussion: """
            Turns sriov_drivers_autoprobe off first (so no host driver grabs the new VFs), writes \
            sriov_numvfs (through 0 when changing a non-zero count), binds every VF to vfio-pci \
            and restores autoprobe. If a VF cannot be bound, the others are returned and the \
            count goes back to 0. --vfs 0 removes the VFs. Refused, nothing changed: a PF without \
            SR-IOV, a count above sriov_totalvfs, VFs in use by a host driver or a VM. \
            A PF bound to vfio-pci (loaded with enable_sriov=1) first gets a VF token through \
            VFIO (--vf-token, or a random one), printed with the name a VMM opens a VF by; the \
            first VF is then opened with it and must be refused without it.

            Exit status: 0 done, 3 refused (VFs in use), 4 undone, 1 other errors.

            Examples:
              vfioctl sriov 0000:03:00.0 --vfs 4
              vfioctl sriov 03:00.0 --vfs 0 --json
              vfioctl sriov 03:00.0 --vfs 2 --vf-token 2ab74924-c335-45f4-9b16-8569e5b08258
            """
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: BindingOptions
    @Argument(help: ArgumentHelp("The physical function, DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address")) var address: PCIAddress
    @Option(name: .long, help: ArgumentHelp("How many VFs to have (0 removes them).", valueName: "n")) var vfs: NonNegativeCount
    @Flag(help: "Print what would happen; change nothing.") var dryRun = false
    @Flag(help: "Keep the VF count across reboots: a udev rule sets it when the PF's driver binds, and each VF gets its address-keyed vfio-pci rule (--vfs 0 removes them).")
    var persist = false
    @Option(name: .long, help: ArgumentHelp("Where udev rules go (with --persist).", valueName: "dir"))
    var rulesDir: String = UdevRules.defaultDirectory
    @Option(name: .long, help: ArgumentHelp("For a PF on vfio-pci: the VF token (a UUID) VMMs must present to open its VFs (default: a random one).", valueName: "uuid"))
    var vfToken: VFToken?

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
            let enableSRIOV = SysfsReader().readString(global.resolvedRoot.appending("module/vfio_pci/parameters/enable_sriov"))
            try SRIOVPlan.checkVFIOPhysicalFunction(plan, driver: inventory.device(target)?.driver, enableSRIOV: enableSRIOV)
        } catch .refused(let evidence) {
            warn("Error: " + BindingError.refused(evidence).description)
            throw ExitCode(BindingExit.refused)
        } catch { throw bindingFailure(error) }

        let pfOnVFIO = inventory.device(target)?.isOnVFIO ?? false
        if vfToken != nil && !pfOnVFIO {
            throw CommandFailure("\(target) is on \(inventory.device(target)?.driver ?? "no driver"), not vfio-pci: a VF token is vfio-pci's (bind the PF with `vfioctl bind \(target)` first, or leave out --vf-token)")
        }
        // The token a PF on vfio-pci gets before its VFs exist: VMMs open a VF with it.
        let token: VFToken? = pfOnVFIO && plan.requested > 0 && !plan.isUnchanged ? (vfToken ?? VFToken.random()) : nil
        let change = "\(target): \(plan.current) -> \(plan.requested) VFs (of \(plan.total))"
        if plan.isUnchanged || dryRun {
            let what = plan.isUnchanged ? "unchanged"
                : plan.requested == 0 ? "would remove every VF"
                : "would set" + (plan.resetsFirst ? " (through 0)" : "") + " and bind every VF to vfio-pci"
            report(change + ": " + what + (token != nil ? "; the PF on vfio-pci would get a VF token" : ""), vfs: [], outcomes: [], failed: nil)
            if plan.isUnchanged && !dryRun && persist {
                try persistCount(plan, vfs: inventory.device(target)?.sriov?.virtualFunctions ?? [])
            }
            return
        }
        if let token {
            // Set through the PF's own VFIO device; the kernel keeps it after the PF is closed.
            do {
                let device = try openVFIODevice(target, sysfsRoot: global.resolvedRoot.path)
                try device.setVFToken(token)
            } catch {
                throw CommandFailure("cannot set the VF token of \(target) through VFIO: \(error); nothing changed")
            }
        }
        let binder = Binder(root: global.resolvedRoot, devRoot: options.devRoot, journal: options.journal, hooks: TestHookSeam.binding)
        let result: SRIOVConfigurator.Result
        do {
            let lock = try BindingLock(directory: options.journal.directory, timeout: options.lockTimeout.seconds, hooks: TestHookSeam.binding)
            defer { withExtendedLifetime(lock) {} }
            result = try SRIOVConfigurator(binder: binder).apply(plan) { () throws(BindingError) -> PCIInventory in
                do { return try InventoryLoader.load(global, detail: .full) } catch {
                    throw BindingError.sriov("cannot rescan the devices after creating VFs: \(error)")
                }
            }
        } catch { throw bindingFailure(error) }
        var check: TokenCheck?
        if let token, result.failed == nil, let first = result.virtualFunctions.first {
            check = TokenCheck.run(first, token: token, sysfsRoot: global.resolvedRoot.path)
        }
        report(change, vfs: result.virtualFunctions, outcomes: result.outcomes, failed: result.failed, token: token, check: check)
        if result.failed != nil { throw ExitCode(BindingExit.rolledBack) }
        if persist { try persistCount(plan, vfs: result.virtualFunctions) }
        if let check, !check.opensWithToken || check.refusedWithout == nil {
            throw CommandFailure("the VF token does not guard \(check.vf) as it should (see above)")
        }
    }

    /// The udev rules that bring the count and the VFs' binding back at boot: the PF's count
    /// rule and one address rule per VF; the rules of VFs that went away are removed.
    func persistCount(_ plan: SRIOVPlan, vfs: [PCIAddress]) throws {
        let udev = UdevRules(directory: rulesDir)
        do {
            for vf in plan.removed where !vfs.contains(vf) { try udev.remove(vf) }
            if plan.requested == 0 {
                try udev.removeSRIOV(plan.physicalFunction)
            } else {
                for vf in vfs { try udev.add(vf) }
                try udev.addSRIOV(plan.physicalFunction, count: plan.requested)
            }
        } catch { throw bindingFailure(error) }
        if rulesDir == UdevRules.defaultDirectory { UdevRules.reload() }
        let what = plan.requested == 0 ? "removed" : "written"
        if global.json { warn("note: VF count rule \(what): \(udev.sriovPath(for: plan.physicalFunction))") }
        else { print("VF count rule \(what): \(udev.sriovPath(for: plan.physicalFunction))") }
    }

    /// A VF opened through VFIO with the token and without it: the first must work, the second
    /// must be refused, or VMMs would get VFs the PF's owner never handed out.
    struct TokenCheck {
        let vf: PCIAddress
        let opensWithToken: Bool
        let withTokenError: String?
        /// The kernel's refusal without a token (EACCES); nil when it opened.
        let refusedWithout: String?

        static func run(_ vf: PCIAddress, token: VFToken, sysfsRoot: String) -> TokenCheck {
            var withTokenError: String?
            do { _ = try openVFIODevice(vf, sysfsRoot: sysfsRoot, vfToken: token) } catch { withTokenError = "\(error)" }
            var refused: String?
            do { _ = try openVFIODevice(vf, sysfsRoot: sysfsRoot) } catch {
                // EACCES here is the kernel asking for the token, not a permission problem.
                if case .system(_, let code) = error, code == .permissionDenied {
                    refused = "EACCES: the kernel requires the VF token"
                } else {
                    refused = "\(error)"
                }
            }
            return TokenCheck(vf: vf, opensWithToken: withTokenError == nil, withTokenError: withTokenError, refusedWithout: refused)
        }

        var summary: String {
            (opensWithToken ? "\(vf) opens with the token" : "\(vf) did not open with the token (\(withTokenError ?? "?"))")
                + (refusedWithout.map { "; without it: refused (\($0))" } ?? "; without it: it opened too")
        }
    }

    func report(_ summary: String, vfs: [PCIAddress], outcomes: [BindOutcome], failed: String?, token: VFToken? = nil, check: TokenCheck? = nil) {
        if global.json {
            let items: [JSONValue] = outcomes.map { outcome in
                .object([("address", .string(outcome.address)), ("from_driver", .optional(outcome.fromDriver)),
                         ("to_driver", .optional(outcome.toDriver)), ("action", .string(outcome.action.rawValue)),
                         ("reason", .optional(outcome.reason))])
            }
            var fields: [(String, JSONValue)] = [("summary", .string(summary)), ("virtfns", .array(vfs.map { .string($0.description) })),
                                                 ("outcomes", .array(items)), ("failed", .optional(failed)),
                                                 ("vf_token", .optional(token?.description))]
            fields.append(("vf_token_check", check.map { check in
                .object([("vf", .string(check.vf.description)), ("opens_with_token", .bool(check.opensWithToken)),
                         ("refused_without", .optional(check.refusedWithout))])
            } ?? .null))
            JSONValue.object(fields).printToStandardOutput()
        } else {
            print(summary)
            for outcome in outcomes {
                print("  \(outcome.address): \(outcome.action.rawValue) (\(outcome.fromDriver ?? "no driver") -> \(outcome.toDriver ?? "no driver"))" + (outcome.reason.map { ": \($0)" } ?? ""))
            }
            if let failed { print("failed: \(failed)") }
            if let token {
                print("VF token: \(token)")
                if let vf = vfs.first { print("  a VMM opens a VF with the device name \"\(vf) vf_token=\(token)\" (VFIO_GROUP_GET_DEVICE_FD)") }
            }
            if let check { print("  token check: " + check.summary) }
        }
    }
}

/// `--vf-token UUID`.
extension VFToken: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
}
