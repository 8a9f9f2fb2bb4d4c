#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PCIInventory
import SystemPackage

/// What happened to one device, for the CLI's text and JSON.
public struct BindOutcome: Sendable, Equatable {
    public enum Action: String, Sendable {
        case bound, unbound, unchanged, refused
        case rolledBack = "rolled-back"
        case wouldBind = "would-bind"
        case wouldUnbind = "would-unbind"
    }
    public let address: String
    public let fromDriver: String?
    public let toDriver: String?
    public let action: Action
    public let reason: String?

    public init(address: String, fromDriver: String?, toDriver: String?, action: Action, reason: String?) {
        self.address = address
        self.fromDriver = fromDriver
        self.toDriver = toDriver
        self.action = action
        self.reason = reason
    }
}

/// Performs binding changes through sysfs, one device at a time, journalled and verified.
///
/// Each bind goes: journal the original state -> driver_override = vfio-pci -> unbind from the
/// current driver -> drivers_probe -> verify the driver link and /dev/vfio/<group>. Any failure
/// rolls the device back to its original driver. A process killed between steps leaves a
/// journal entry from which `restore` returns the device.
public struct Binder {
    public let root: SysfsRoot
    public let devRoot: String
    public let journal: BindingJournal
    let reader = SysfsReader()
    /// Test hook: `VFIOCTL_FAULT_INJECT=STEP` kills the process with SIGKILL right after STEP
    /// (journaled, override-set, unbound, probed, verified) so crash recovery can be tested
    /// against the real kernel.
    let faultStep: String?
    /// Test hook: `VFIOCTL_STEP_DELAY_MS=N` sleeps N ms after every step, widening the window in
    /// which two unlocked runs would interleave.
    let stepDelay: UInt32
    /// How long to wait for the kernel (and udev) to settle after a probe.
    public var settleTimeout: Double = 5

    public static let steps = ["journaled", "override-set", "unbound", "probed", "verified"]

    public init(root: SysfsRoot, devRoot: String = "/dev", journal: BindingJournal,
                environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.root = root
        self.devRoot = devRoot
        self.journal = journal
        self.faultStep = environment["VFIOCTL_FAULT_INJECT"]
        self.stepDelay = environment["VFIOCTL_STEP_DELAY_MS"].flatMap { UInt32($0) } ?? 0
    }

    func devicePath(_ address: String) -> String { root.appending("bus/pci/devices/\(address)") }

    public func currentDriver(_ address: String) -> String? {
        reader.readLinkBasename(devicePath(address) + "/driver")
    }

    func currentOverride(_ address: String) -> String? {
        guard let value = reader.readString(devicePath(address) + "/driver_override"), value != "(null)", !value.isEmpty else { return nil }
        return value
    }

    func injectFault(after step: String) {
        if stepDelay > 0 { usleep(stepDelay * 1000) }
        guard faultStep == step else { return }
        FileHandle.standardError.write(Data("vfioctl: fault injection: killed after \(step)\n".utf8))
        kill(getpid(), SIGKILL)
    }

    /// Checks that bindings can change at all, before anything is touched.
    public func checkPreconditions(for addresses: [String]) throws(BindingError) {
        for address in addresses {
            let path = devicePath(address) + "/driver_override"
            guard access(path, W_OK) == 0 else { throw .notPermitted(path: path) }
        }
        let probe = root.appending("bus/pci/drivers_probe")
        guard access(probe, W_OK) == 0 else { throw .notPermitted(path: probe) }
    }

    /// Loads vfio-pci if its driver directory is missing.
    public func ensureVFIODriver() throws(BindingError) {
        let driverDirectory = root.appending("bus/pci/drivers/vfio-pci")
        if reader.exists(driverDirectory) { return }
        guard root.isSystem else {
            throw .vfioDriverUnavailable(reason: "\(driverDirectory) does not exist")
        }
        let status = runModprobe("vfio-pci")
        guard reader.exists(driverDirectory) else {
            throw .vfioDriverUnavailable(reason: status == 0 ? "modprobe vfio-pci loaded nothing" : "modprobe vfio-pci failed with status \(status)")
        }
    }

    func runModprobe(_ module: String) -> Int32 {
        guard let modprobe = findProgram(["/sbin/modprobe", "/usr/sbin/modprobe", "/bin/modprobe", "/usr/bin/modprobe"]) else {
            return -1
        }
        return runProgram(modprobe, [module])
    }

    func write(_ value: String, to path: String) throws(BindingError) {
        do {
            let descriptor = try FileDescriptor.open(path, .writeOnly, options: [.closeOnExec])
            try descriptor.closeAfter { _ = try descriptor.writeAll(Array(value.utf8)) }
        } catch {
            throw .sysfsWrite(path: path, value: value.trimmingCharacters(in: ["\n"]), reason: "\(error)")
        }
    }

    /// Waits until `condition` holds or the settle timeout passes.
    func settle(_ condition: () -> Bool) -> Bool {
        let deadline = BindingLock.now() + settleTimeout
        while !condition() {
            if BindingLock.now() >= deadline { return false }
            usleep(10_000)
        }
        return true
    }

    /// Binds one device to vfio-pci; rolls back and reports on failure.
    public func bind(_ address: String, group: Int) throws(BindingError) -> BindOutcome {
        let originalDriver = currentDriver(address)
        let originalOverride = currentOverride(address)
        if originalDriver == BindPlan.targetDriver {
            return BindOutcome(address: address, fromDriver: originalDriver, toDriver: originalDriver,
                               action: .unchanged, reason: "already bound to vfio-pci")
        }
        // Keep the first original if an earlier interrupted run left an entry.
        let earlier = try journal.entry(for: address)
        try journal.record(.init(address: address,
                                 originalDriver: earlier?.originalDriver ?? originalDriver,
                                 originalOverride: earlier?.originalOverride ?? originalOverride,
                                 state: .binding, updated: Date()))
        injectFault(after: "journaled")
        do {
            try write(BindPlan.targetDriver, to: devicePath(address) + "/driver_override")
            injectFault(after: "override-set")
            if originalDriver != nil {
                try write(address, to: devicePath(address) + "/driver/unbind")
            }
            injectFault(after: "unbound")
            // drivers_probe fails with an error when no driver takes the device; the
            // verification below is what decides.
            try? write(address, to: root.appending("bus/pci/drivers_probe"))
            injectFault(after: "probed")
            let groupNode = devRoot + "/vfio/\(group)"
            let bound = settle { currentDriver(address) == BindPlan.targetDriver }
            let nodeExists = bound && settle { reader.exists(groupNode) }
            guard bound, nodeExists else {
                let why = !bound
                    ? "after drivers_probe the device is bound to \(currentDriver(address) ?? "no driver"), not vfio-pci"
                    : "\(groupNode) did not appear"
                let restored = try returnToOriginal(address, entry: try journal.entry(for: address))
                return BindOutcome(address: address, fromDriver: originalDriver, toDriver: restored,
                                   action: .rolledBack, reason: why + "; rolled back to \(restored ?? "no driver")")
            }
            injectFault(after: "verified")
            try journal.record(.init(address: address,
                                     originalDriver: earlier?.originalDriver ?? originalDriver,
                                     originalOverride: earlier?.originalOverride ?? originalOverride,
                                     state: .bound, updated: Date()))
            return BindOutcome(address: address, fromDriver: originalDriver, toDriver: BindPlan.targetDriver,
                               action: .bound, reason: nil)
        } catch {
            let restored = try? returnToOriginal(address, entry: try journal.entry(for: address))
            return BindOutcome(address: address, fromDriver: originalDriver, toDriver: restored ?? currentDriver(address),
                               action: .rolledBack, reason: "\(error.description); rolled back to \((restored ?? nil) ?? "no driver")")
        }
    }

    /// Carries out a bind plan, all or nothing: binds every `.bind` step in order and, if one is
    /// rolled back, returns the ones this call already bound, so a group is never left half
    /// assigned. Refused plans change nothing (check `plan.isRefused` first; this throws).
    /// The caller holds the `BindingLock`.
    public func apply(_ plan: BindPlan) throws(BindingError) -> [BindOutcome] {
        guard !plan.isRefused else {
            throw .refused(plan.steps.filter { $0.action == .refused }.map { "\($0.address): \($0.reasons.joined(separator: "; "))" }.joined(separator: "; "))
        }
        let toBind = plan.steps.filter { $0.action == .bind }.map(\.address.description)
        try checkPreconditions(for: toBind)
        if !toBind.isEmpty { try ensureVFIODriver() }
        var outcomes: [BindOutcome] = []
        var done: [String] = []
        for step in plan.steps {
            guard step.action == .bind, let groupID = plan.group else {
                outcomes.append(BindOutcome(address: step.address.description, fromDriver: step.fromDriver,
                                            toDriver: step.fromDriver, action: .unchanged, reason: step.reasons.first))
                continue
            }
            let outcome = try bind(step.address.description, group: groupID)
            outcomes.append(outcome)
            if outcome.action == .bound { done.append(outcome.address) }
            guard outcome.action == .rolledBack else { continue }
            for address in done.reversed() {
                let undone = try unbind(address)
                if let index = outcomes.firstIndex(where: { $0.address == address }) {
                    outcomes[index] = BindOutcome(address: address, fromDriver: outcomes[index].fromDriver,
                                                  toDriver: undone.toDriver, action: .rolledBack,
                                                  reason: "undone because \(outcome.address) could not be bound")
                }
            }
            break
        }
        return outcomes
    }

    /// Returns a device to the driver the journal recorded (or, without an entry, clears the
    /// override and lets the kernel choose). Removes the journal entry when done.
    @discardableResult
    public func returnToOriginal(_ address: String, entry: BindingJournal.Entry?) throws(BindingError) -> String? {
        if var marked = entry {
            marked.state = .unbinding
            marked.updated = Date()
            try journal.record(marked)
        }
        let overridePath = devicePath(address) + "/driver_override"
        // Writing a lone newline clears driver_override.
        try write((entry?.originalOverride ?? "") + "\n", to: overridePath)
        if let driver = currentDriver(address), driver != entry?.originalDriver {
            try unbindDriver(address)
        }
        if let original = entry?.originalDriver {
            if currentDriver(address) != original {
                // Bind straight to the recorded driver: a reprobe could pick another one.
                let bindPath = root.appending("bus/pci/drivers/\(original)/bind")
                if (try? write(address, to: bindPath)) == nil {
                    try? write(address, to: root.appending("bus/pci/drivers_probe"))
                }
            }
            _ = settle { currentDriver(address) == original }
        } else {
            try? write(address, to: root.appending("bus/pci/drivers_probe"))
            _ = settle { currentDriver(address) != BindPlan.targetDriver }
        }
        let now = currentDriver(address)
        if entry == nil || now == entry?.originalDriver {
            try journal.remove(address)
        }
        return now
    }

    /// Returns a device to its original driver: `vfioctl unbind` and `restore`.
    public func unbind(_ address: String) throws(BindingError) -> BindOutcome {
        let entry = try journal.entry(for: address)
        let from = currentDriver(address)
        let now = try returnToOriginal(address, entry: entry)
        if let entry, now != entry.originalDriver {
            return BindOutcome(address: address, fromDriver: from, toDriver: now, action: .unchanged,
                               reason: "could not return to \(entry.originalDriver ?? "no driver"): now on \(now ?? "no driver"); the journal keeps the entry, retry with `vfioctl restore`")
        }
        return BindOutcome(address: address, fromDriver: from, toDriver: now, action: .unbound, reason: nil)
    }
}
