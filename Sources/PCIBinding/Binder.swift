#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PCIInventory
import TextFormat
import SystemCalls

/// What happened to one device, for the CLI's text and JSON.
public struct BindOutcome: Sendable, Equatable {
    /// What was done to the device (or, in a dry run, would be).
    public enum Action: String, Sendable {
        case bound, unbound, unchanged, refused
        case rolledBack = "rolled-back"
        /// A failed bind whose rollback did not bring the device back to its previous driver.
        case rollbackFailed = "rollback-failed"
        /// An unbind or restore after which the device is not on its original driver.
        case notReturned = "not-returned"
        case wouldBind = "would-bind"
        case wouldUnbind = "would-unbind"
    }
    /// The device's address.
    public let address: String
    /// Its driver before; nil for none.
    public let fromDriver: String?
    /// Its driver after; nil for none.
    public let toDriver: String?
    /// What was done.
    public let action: Action
    /// Why, where there is more to say (a refusal's evidence, a failure's cause).
    public let reason: String?
    /// The BARs this run resized (`bind --rebar`) or put back (`unbind`, `restore`).
    public var barChanges: [BARChange] = []

    /// One BAR's size change, in bytes.
    public struct BARChange: Sendable, Equatable {
        /// The BAR's index.
        public let bar: Int
        /// Its size before.
        public let from: UInt64
        /// Its size after.
        public let to: UInt64

        /// A change as given.
        public init(bar: Int, from: UInt64, to: UInt64) {
            self.bar = bar
            self.from = from
            self.to = to
        }
    }

    /// An outcome as given.
    public init(address: String, fromDriver: String?, toDriver: String?, action: Action, reason: String?,
                barChanges: [BARChange] = []) {
        self.address = address
        self.fromDriver = fromDriver
        self.toDriver = toDriver
        self.action = action
        self.reason = reason
        self.barChanges = barChanges
    }
}

/// Performs binding changes through sysfs, journalled and verified.
///
/// A bind goes: journal every device's original state (one append) -> for each device,
/// driver_override = vfio-pci -> unbind from the current driver -> drivers_probe -> verify the
/// driver link and /dev/vfio/<group> -> journal them all as bound (one append). A failure at any
/// step, the last journal write included, returns every device this call touched to its
/// original driver, and the outcome says where each device really is. A process killed between
/// steps leaves a journal from which `restore` returns the devices.
///
/// Nothing read from sysfs is trusted: addresses must be canonical, every path written or read
/// must resolve inside the sysfs root, driver links must lead to a driver directory of that
/// root, and driver names must be single path components. Every sysfs write is bounded in time.
public struct Binder {
    /// The sysfs root every path is taken under.
    public let root: SysfsRoot
    /// Where device nodes are (/dev), for the holder checks.
    public let devRoot: String
    /// The journal every change is recorded in first.
    public let journal: BindingJournal
    /// Faults and delays for tests (none in vfioctl itself): a SIGKILL right after a step, so
    /// crash recovery can be tested against the real kernel, and a sleep after every step.
    let hooks: BindingTestHooks
    /// How long to wait for the kernel (and udev) to settle after a probe.
    public var settleTimeout: Double = 5
    /// How long one sysfs write or read may block (a driver's probe or remove that hangs)
    /// before the run stops and reports where each device is.
    public var ioTimeout: Double = 30
    /// Where writes go: the kernel, or an emulation of it in tests.
    public var kernel: any SysfsWriting
    /// The root with its links resolved: everything read or written must stay below it.
    let resolvedRoot: String

    /// A bind's steps in order, as the journal and a failed run name them.
    public static let steps = ["journaled", "override-set", "unbound", "probed", "verified"]

    /// A binder over `root` that journals to `journal`; `hooks` inject faults or step delays (tests only).
    public init(root: SysfsRoot, devRoot: String = "/dev", journal: BindingJournal, hooks: BindingTestHooks = .none) {
        self.root = root
        self.devRoot = devRoot
        self.journal = journal
        self.hooks = hooks
        self.resolvedRoot = BindingValidation.resolvedPath(root.path) ?? root.path
        self.kernel = KernelSysfsWriter(root: resolvedRoot)
    }

    // MARK: Validated reads

    func canonical(_ text: String) throws(BindingError) -> PCIAddress {
        switch BindingValidation.canonicalAddress(text) {
        case .success(let address): return address
        case .failure(let problem): throw .untrustedSysfs(path: root.appending("bus/pci/devices/\(text)"), reason: "the address \(problem)")
        }
    }

    func devicePath(_ address: PCIAddress) -> String { root.appending("bus/pci/devices/\(address)") }

    /// `path` with its links resolved, required to exist and to lie inside the root.
    func resolveInside(_ path: String, value: String = "") throws(BindingError) -> String {
        guard let resolved = BindingValidation.resolvedPath(path) else {
            throw .sysfsWrite(path: path, value: value, reason: "it does not exist")
        }
        guard BindingValidation.isInside(resolved, resolvedRoot) else {
            throw .untrustedSysfs(path: path, reason: "it resolves to \(resolved), outside the sysfs root \(resolvedRoot)")
        }
        return resolved
    }

    /// The driver bound to the device: its `driver` link must lead to a driver directory of this
    /// root (bus/pci/drivers/NAME) with a valid name. nil when no driver is bound.
    func driver(of address: PCIAddress) throws(BindingError) -> String? {
        let link = devicePath(address) + "/driver"
        var status = stat()
        guard lstat(link, &status) == 0 else { return nil }
        guard let resolved = BindingValidation.resolvedPath(link) else {
            throw .untrustedSysfs(path: link, reason: "the driver link leads nowhere")
        }
        let drivers = resolvedRoot + "/bus/pci/drivers/"
        guard resolved.hasPrefix(drivers) else {
            throw .untrustedSysfs(path: link, reason: "the driver link leads to \(resolved), not to a driver in \(drivers)")
        }
        let name = String(resolved.dropFirst(drivers.count))
        if let problem = BindingValidation.driverNameProblem(name) {
            throw .untrustedSysfs(path: link, reason: "the driver name \"\(name)\" \(problem)")
        }
        return name
    }

    /// driver_override, nil when unset ("(null)").
    func override(of address: PCIAddress) throws(BindingError) -> String? {
        let path = devicePath(address) + "/driver_override"
        let resolved = try resolveInside(path)
        // Opened and checked here, beneath the root; read by a child (the show takes the device
        // lock, which a hung probe or remove holds).
        let descriptor: Int32
        do { descriptor = try SafeFile.openBeneath(root: resolvedRoot, relative: String(resolved.dropFirst(resolvedRoot.count)), flags: O_RDONLY) } catch {
            throw .untrustedSysfs(path: path, reason: error.reason)
        }
        defer { close(descriptor) }
        let bytes: [UInt8]
        switch BoundedWrite.read(descriptor, limit: 4096, timeout: ioTimeout) {
        case .read(let value): bytes = value
        case .failed(let reason): throw .untrustedSysfs(path: path, reason: reason)
        case .pending: throw .sysfsTimeout(path: path, value: "(read)", seconds: ioTimeout, state: "nothing was changed")
        }
        let value = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: [" ", "\n", "\t"])
        if value.isEmpty || value == "(null)" { return nil }
        if let problem = BindingValidation.driverNameProblem(value) {
            throw .untrustedSysfs(path: path, reason: "the value \"\(value)\" \(problem)")
        }
        return value
    }

    // MARK: Writes

    /// Writes through `kernel`, to a path resolved inside the root, waiting at most `timeout`
    /// (`ioTimeout` unless given).
    func write(_ value: String, to path: String, timeout: Double? = nil) throws(BindingError) {
        let shown = value.trimmingCharacters(in: ["\n"])
        let resolved = try resolveInside(path, value: shown)
        let seconds = timeout ?? ioTimeout
        do { try kernel.write(value, to: resolved, timeout: seconds) } catch {
            guard case .sysfsTimeout(_, _, _, let pending) = error else { throw error }
            throw .sysfsTimeout(path: path, value: shown, seconds: seconds, state: pending)
        }
    }

    /// drivers_probe: it fails when no driver takes the device, which the verification after it
    /// judges. A write that hangs or a path that leaves the root is not such a failure.
    func probe(_ address: PCIAddress) throws(BindingError) {
        do { try write(address.description, to: root.appending("bus/pci/drivers_probe")) } catch {
            switch error {
            case .sysfsTimeout, .untrustedSysfs: throw error
            default: return
            }
        }
    }

    func injectFault(after step: String) {
        if hooks.stepDelayMilliseconds > 0 { usleep(hooks.stepDelayMilliseconds * 1000) }
        guard hooks.faultStep == step else { return }
        FileHandle.standardError.write(Data("vfioctl: fault injection: killed after \(step)\n".utf8))
        kill(getpid(), SIGKILL)
    }

    /// Checks that bindings can change at all, before anything is touched.
    public func checkPreconditions(for addresses: [String]) throws(BindingError) {
        for text in addresses {
            let path = devicePath(try canonical(text)) + "/driver_override"
            guard access(path, W_OK) == 0 else { throw .notPermitted(path: path) }
        }
        let probe = root.appending("bus/pci/drivers_probe")
        guard access(probe, W_OK) == 0 else { throw .notPermitted(path: probe) }
    }

    /// Loads vfio-pci if its driver directory is missing.
    public func ensureVFIODriver() throws(BindingError) {
        let driverDirectory = root.appending("bus/pci/drivers/vfio-pci")
        if access(driverDirectory, F_OK) == 0 { return }
        guard root.isSystem else {
            throw .vfioDriverUnavailable(reason: "\(driverDirectory) does not exist")
        }
        let status = runModprobe("vfio-pci")
        guard access(driverDirectory, F_OK) == 0 else {
            throw .vfioDriverUnavailable(reason: status == 0 ? "modprobe vfio-pci loaded nothing" : "modprobe vfio-pci failed with status \(status)")
        }
    }

    func runModprobe(_ module: String) -> Int32 {
        guard let modprobe = findProgram(["/sbin/modprobe", "/usr/sbin/modprobe", "/bin/modprobe", "/usr/bin/modprobe"]) else {
            return -1
        }
        return runProgram(modprobe, [module])
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

    /// Where each device is now, for a report made after a step could not finish.
    func describeState(_ addresses: [PCIAddress]) -> String {
        let shown = addresses.prefix(8).map { address -> String in
            let driver: String
            do throws(BindingError) { driver = try self.driver(of: address) ?? "no driver" } catch { driver = "unknown (\(error.description))" }
            let state = ((try? journal.entry(for: address)) ?? nil).map { "journal: \($0.state.rawValue)" } ?? "not in the journal"
            return "\(address) on \(driver) (\(state))"
        }
        let more = addresses.count > shown.count ? ", and \(addresses.count - shown.count) more" : ""
        return shown.joined(separator: ", ") + more
    }

    func withState<T>(_ addresses: [PCIAddress], _ work: () throws(BindingError) -> T) throws(BindingError) -> T {
        do { return try work() } catch {
            if case .sysfsTimeout(let path, let value, let seconds, let known) = error {
                let state = describeState(addresses)
                throw .sysfsTimeout(path: path, value: value, seconds: seconds, state: known.isEmpty ? state : known + "; " + state)
            }
            throw error
        }
    }

    // MARK: Bind

    struct Target {
        let address: PCIAddress
        let fromDriver: String?
        let entry: BindingJournal.Entry
        /// BARs to resize while the device has no driver, between the unbind and the probe.
        var resizes: [ResizableBARPlan] = []
    }

    /// Carries out a bind plan, all or nothing: binds every `.bind` step in order and, if one
    /// fails (or the journal cannot record the result), returns every device this call touched,
    /// so a group is never left half assigned. Refused plans change nothing (check
    /// `plan.isRefused` first; this throws). `resizes` (`bind --rebar`, planned with
    /// `unbindingFirst`) are carried out as a step of the bind of their device, after its driver
    /// lets go and before vfio-pci probes it, their old sizes journalled with the rest, so a
    /// rollback, `unbind` and `restore` put them back. The caller holds the `BindingLock`.
    public func apply(_ plan: BindPlan, resizes: [ResizableBARPlan] = []) throws(BindingError) -> [BindOutcome] {
        guard !plan.isRefused else {
            throw .refused(plan.steps.filter { $0.action == .refused }.map { "\($0.address): \($0.reasons.joined(separator: "; "))" }.joined(separator: "; "))
        }
        let bindSteps = plan.steps.filter { $0.action == .bind }
        try checkPreconditions(for: bindSteps.map(\.address.description))
        guard !bindSteps.isEmpty, let group = plan.group else { return plan.steps.map(Self.unchanged) }
        try ensureVFIODriver()

        // Every original state is read and checked before anything changes.
        let earlier = Dictionary(try journal.entries().map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
        var targets: [Target] = []
        for step in bindSteps {
            let driver = try driver(of: step.address)
            let override = try override(of: step.address)
            // An entry left by an interrupted run keeps the first original, if it is this device.
            let kept = earlier[step.address].flatMap { entry in
                entry.identity == nil || step.identity == nil || entry.identity == step.identity ? entry : nil
            }
            var entry = BindingJournal.Entry(address: step.address, originalDriver: kept.map(\.originalDriver) ?? driver,
                                             originalOverride: kept.map(\.originalOverride) ?? override,
                                             identity: step.identity ?? kept?.identity, state: .binding,
                                             barSizes: kept?.barSizes ?? [])
            let mine = resizes.filter { $0.address == step.address && !$0.isUnchanged }
            for resize in mine {
                entry.barSizes = entry.recordingResize(bar: resize.bar, from: resize.currentSize, to: resize.newSize)
            }
            targets.append(Target(address: step.address, fromDriver: driver, entry: entry, resizes: mine))
        }
        // One append for the whole plan, on disk before the first sysfs write. If it fails,
        // nothing has changed.
        try journal.record(targets.map(\.entry))
        injectFault(after: "journaled")

        let addresses = targets.map(\.address)
        var done: [Target] = []
        for target in targets {
            let failure: String? = try withState(addresses) { () throws(BindingError) -> String? in
                do throws(BindingError) { return try bindOne(target, group: group) } catch {
                    if case .sysfsTimeout = error { throw error }
                    return error.failureOnly
                }
            }
            if let failure {
                return try rollBack(plan, targets: targets, attempted: done + [target], failed: target.address, reason: failure)
            }
            done.append(target)
        }
        do {
            try journal.record(targets.map { target in
                var entry = target.entry
                entry.state = .bound
                entry.updated = Date()
                return entry
            })
        } catch {
            return try rollBack(plan, targets: targets, attempted: done, failed: nil,
                                reason: "the journal could not record the bind (\(error.failureOnly)), so it was undone")
        }
        let targetsByAddress = Dictionary(targets.map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
        return plan.steps.map { step in
            guard step.action == .bind else { return Self.unchanged(step) }
            let from = targetsByAddress[step.address]?.fromDriver
            return BindOutcome(address: step.address.description, fromDriver: from, toDriver: BindPlan.targetDriver,
                               action: from == BindPlan.targetDriver ? .unchanged : .bound,
                               reason: from == BindPlan.targetDriver ? "already bound to vfio-pci" : nil,
                               barChanges: (targetsByAddress[step.address]?.resizes ?? []).map {
                                   BindOutcome.BARChange(bar: $0.bar, from: $0.currentSize, to: $0.newSize)
                               })
        }
    }

    /// The outcome of a step that changes nothing.
    public static func unchangedOutcome(_ step: BindPlan.Step) -> BindOutcome { unchanged(step) }

    static func unchanged(_ step: BindPlan.Step) -> BindOutcome {
        BindOutcome(address: step.address.description, fromDriver: step.fromDriver, toDriver: step.fromDriver,
                    action: .unchanged, reason: step.reasons.first)
    }

    /// The sysfs steps of one bind. nil when the device is on vfio-pci with its group node,
    /// otherwise why not.
    func bindOne(_ target: Target, group: Int) throws(BindingError) -> String? {
        let address = target.address
        let node = devRoot + "/vfio/\(group)"
        if target.fromDriver != BindPlan.targetDriver {
            try write(BindPlan.targetDriver, to: devicePath(address) + "/driver_override")
            injectFault(after: "override-set")
            if target.fromDriver != nil {
                try unbindDriver(address)
            }
            injectFault(after: "unbound")
            for resize in target.resizes { try self.resize(resize) }
            try probe(address)
            injectFault(after: "probed")
        }
        let bound = settle { (try? driver(of: address)) == BindPlan.targetDriver }
        guard bound else {
            let now: String
            do { now = try driver(of: address) ?? "no driver" } catch { now = "an untrusted driver link (\(error.description))" }
            return "after drivers_probe the device is bound to \(now), not vfio-pci"
        }
        guard settle({ access(node, F_OK) == 0 }) else { return "\(node) did not appear" }
        injectFault(after: "verified")
        return nil
    }

    /// Returns every device of `attempted` (last first) and drops the entries of the plan's
    /// devices that were never touched; the outcomes say where each device really is.
    func rollBack(_ plan: BindPlan, targets: [Target], attempted: [Target], failed: PCIAddress?,
                  reason: String) throws(BindingError) -> [BindOutcome] {
        let results = try returnDevices(attempted.reversed().map { ($0.address, $0.entry) }, journalFirst: false)
        let attemptedSet = Set(attempted.map(\.address))
        let untouched = targets.map(\.address).filter { !attemptedSet.contains($0) }
        var untouchedNote = ""
        do { try journal.remove(untouched) } catch {
            untouchedNote = "; the journal still lists it (\(error.failureOnly)): `vfioctl restore` clears that"
        }
        let failedName = failed?.description ?? "the journal"
        let targetsByAddress = Dictionary(targets.map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
        let resultsByAddress = Dictionary(results.map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
        return plan.steps.map { step in
            guard step.action == .bind, let target = targetsByAddress[step.address] else {
                return Self.unchanged(step)
            }
            guard let result = resultsByAddress[step.address] else {
                return BindOutcome(address: step.address.description, fromDriver: target.fromDriver, toDriver: target.fromDriver,
                                   action: .unchanged, reason: "not changed: \(failedName) could not be bound" + untouchedNote)
            }
            let why = step.address == failed ? reason : failed == nil ? reason : "undone because \(failedName) could not be bound"
            let original = target.entry.originalDriver ?? "no driver"
            let now = result.now ?? "no driver"
            let journalNote = result.journalProblem.map { "; \($0)" } ?? ""
            if result.returned {
                return BindOutcome(address: step.address.description, fromDriver: target.fromDriver, toDriver: result.now,
                                   action: .rolledBack, reason: why + "; rolled back to \(original)" + journalNote)
            }
            return BindOutcome(address: step.address.description, fromDriver: target.fromDriver, toDriver: result.now,
                               action: .rollbackFailed,
                               reason: why + "; the rollback failed: the device is on \(now), not \(original)"
                                   + (result.problem.map { " (\($0))" } ?? "")
                                   + "; the journal keeps its entry: fix the cause and run `vfioctl restore`" + journalNote)
        }
    }

    // MARK: Node owners

    /// The IOMMU group number from the device's `iommu_group` link (its last component must be
    /// a decimal group number); nil without one.
    func groupNumber(of address: PCIAddress) -> Int? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink(devicePath(address) + "/iommu_group", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        let target = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let last = target.split(separator: "/").last, last.count <= 9, last.allSatisfy({ ("0"..."9").contains($0) }) else { return nil }
        return Int(last)
    }

    /// The VFIO nodes of `addresses` that exist now (their groups' nodes and device files), once each.
    func vfioNodes(of addresses: [PCIAddress]) -> [String] {
        let ownership = VFIONodeOwnership(devRoot: devRoot)
        var seen = Set<String>()
        return addresses.flatMap { address -> [String] in
            guard let group = groupNumber(of: address) else { return [] }
            return ownership.nodes(group: group, deviceDirectory: devicePath(address))
        }.filter { seen.insert($0).inserted }
    }

    /// Gives the VFIO nodes of `addresses` (devices on vfio-pci) to `owner`, mode 0600, and
    /// returns the nodes changed. The journal records the owner first for the devices it holds,
    /// so `restore` gives the nodes back to root after a crash; a failure part-way gives the
    /// nodes already changed back to root and throws. The caller holds the `BindingLock`.
    public func giveNodes(of addresses: [PCIAddress], to owner: NodeOwner) throws(BindingError) -> [String] {
        for address in addresses where try driver(of: address) != BindPlan.targetDriver {
            throw .owner("\(address) is not on vfio-pci, so it has no VFIO node to give to \(owner)")
        }
        let entries = try journal.entries().filter { addresses.contains($0.address) }
        try journal.record(entries.map { entry in
            var changed = entry
            changed.nodeOwner = owner == .root ? nil : owner
            changed.updated = Date()
            return changed
        })
        let nodes = vfioNodes(of: addresses)
        guard !nodes.isEmpty else { throw .owner("no VFIO node exists for \(addresses.map(\.description).joined(separator: " "))") }
        let ownership = VFIONodeOwnership(devRoot: devRoot)
        do { try ownership.give(nodes, to: owner) } catch {
            try? ownership.give(nodes.filter { VFIONodeOwnership.status(of: $0)?.uid == owner.uid }, to: .root)
            throw error
        }
        return nodes
    }

    /// Gives the VFIO nodes of `addresses` back to root (mode 0600), those that exist and are
    /// not root's already; returns why it could not, or nil.
    func giveNodesBackToRoot(_ addresses: [PCIAddress]) -> String? {
        let nodes = vfioNodes(of: addresses).filter { node in
            guard let status = VFIONodeOwnership.status(of: node) else { return false }
            return status.uid != 0 || status.gid != 0 || status.mode != UInt32(NodeOwner.mode)
        }
        guard !nodes.isEmpty else { return nil }
        do { try VFIONodeOwnership(devRoot: devRoot).give(nodes, to: .root) } catch { return error.description }
        return nil
    }

    // MARK: Return to the original driver

    struct Returned {
        let address: PCIAddress
        let from: String?
        let now: String?
        /// On the journal's original driver (or, without an entry, off vfio-pci).
        let returned: Bool
        let problem: String?
        let journalProblem: String?
        /// The BARs put back at their original sizes.
        var restoredBARs: [BindOutcome.BARChange] = []
    }

    /// Returns devices to the drivers their entries record (without an entry: clears the
    /// override and lets the kernel choose). Marks them `unbinding` first (one append) and drops
    /// the entries of those that are back (one append). With `journalFirst`, a journal that
    /// cannot be written stops the run before any change; a rollback goes on without it.
    func returnDevices(_ items: [(PCIAddress, BindingJournal.Entry?)], journalFirst: Bool) throws(BindingError) -> [Returned] {
        var journalProblem: String?
        do {
            try journal.record(items.compactMap { item in
                guard var entry = item.1 else { return nil }
                entry.state = .unbinding
                entry.updated = Date()
                return entry
            })
        } catch {
            if journalFirst { throw error }
            journalProblem = "the journal could not be updated (\(error.failureOnly))"
        }
        let addresses = items.map(\.0)
        // Nodes given to a VMM's user go back to root before the device moves: a group node that
        // stays (another member still on vfio-pci) must not stay with that user.
        if let problem = giveNodesBackToRoot(addresses) {
            journalProblem = [journalProblem, "the VFIO nodes could not be given back to root (\(problem))"].compactMap { $0 }.joined(separator: "; ")
        }
        var results: [Returned] = []
        for (address, entry) in items {
            let from = (try? driver(of: address)) ?? nil
            var problem: String?
            let pendingBefore = pendingBARRestores(address, entry: entry)
            try withState(addresses) { () throws(BindingError) in
                do throws(BindingError) { try returnOne(address, entry: entry) } catch {
                    if case .sysfsTimeout = error { throw error }
                    problem = error.failureOnly
                }
            }
            var now: String?
            do { now = try driver(of: address) } catch {
                now = nil
                problem = problem ?? error.failureOnly
            }
            let barsLeft = pendingBARRestores(address, entry: entry)
            if let first = barsLeft.first, problem == nil {
                problem = "BAR \(first.bar) is still \(byteCount(first.resized)), not \(byteCount(first.original))"
            }
            let back = barsLeft.isEmpty && (entry.map { now == $0.originalDriver } ?? (now != BindPlan.targetDriver))
            let restored = pendingBefore.filter { record in !barsLeft.contains { $0.bar == record.bar } }
                .map { BindOutcome.BARChange(bar: $0.bar, from: $0.resized, to: $0.original) }
            results.append(Returned(address: address, from: from, now: now, returned: back,
                                    problem: problem, journalProblem: journalProblem, restoredBARs: restored))
        }
        let back = results.filter(\.returned).map(\.address)
        do { try journal.remove(back) } catch {
            let note = "back, but the journal still lists it (\(error.failureOnly)); `vfioctl restore` clears that"
            results = results.map {
                Returned(address: $0.address, from: $0.from, now: $0.now, returned: $0.returned, problem: $0.problem,
                         journalProblem: $0.returned ? note : $0.journalProblem, restoredBARs: $0.restoredBARs)
            }
        }
        return results
    }

    /// The sysfs steps of one return.
    func returnOne(_ address: PCIAddress, entry: BindingJournal.Entry?) throws(BindingError) {
        let path = devicePath(address)
        // Writing a lone newline clears driver_override.
        try write((entry?.originalOverride ?? "") + "\n", to: path + "/driver_override")
        let pending = pendingBARRestores(address, entry: entry)
        if let driver = try driver(of: address), driver != entry?.originalDriver || !pending.isEmpty {
            try unbindDriver(address)
        }
        // With no driver bound, as the kernel requires, before the original driver sees the device.
        for record in pending { try restoreBARSize(address, record) }
        if let original = entry?.originalDriver {
            if try driver(of: address) != original {
                // Bind straight to the recorded driver: a reprobe could pick another one. A driver
                // that is gone (unloaded) leaves the reprobe.
                do { try write(address.description, to: root.appending("bus/pci/drivers/\(original)/bind")) } catch {
                    if case .sysfsTimeout = error { throw error }
                    if case .untrustedSysfs = error { throw error }
                    try probe(address)
                }
            }
            _ = settle { (try? driver(of: address)) == original }
        } else if entry?.state != .resized {
            try probe(address)
            _ = settle { (try? driver(of: address)) != BindPlan.targetDriver }
        }
        // A `rebar` entry: the device had no driver and keeps none (no probe picks one for it).
    }

    /// Returns devices to their original drivers (`vfioctl unbind` and `restore`), each with the
    /// entry the journal has for it. Nothing changes if the journal cannot be written first.
    public func returnToOriginal(_ addresses: [PCIAddress]) throws(BindingError) -> [BindOutcome] {
        // One read of the journal for all of them.
        let journalled = Dictionary(try journal.entries().map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
        let items = addresses.map { ($0, journalled[$0]) }
        return try returnDevices(items, journalFirst: true).map { result in
            let entry = journalled[result.address]
            let note = result.journalProblem.map { "; \($0)" } ?? ""
            if result.returned {
                return BindOutcome(address: result.address.description, fromDriver: result.from, toDriver: result.now,
                                   action: .unbound, reason: note.isEmpty ? nil : String(note.dropFirst(2)), barChanges: result.restoredBARs)
            }
            let expected = entry.map { $0.originalDriver ?? "no driver" } ?? "a host driver"
            return BindOutcome(address: result.address.description, fromDriver: result.from, toDriver: result.now,
                               action: .notReturned,
                               reason: "could not return to \(expected): now on \(result.now ?? "no driver")"
                                   + (result.problem.map { " (\($0))" } ?? "")
                                   + (entry == nil ? "" : "; the journal keeps the entry, retry with `vfioctl restore`") + note,
                               barChanges: result.restoredBARs)
        }
    }

    /// Returns one device to its original driver.
    public func unbind(_ address: String) throws(BindingError) -> BindOutcome {
        let outcomes = try returnToOriginal([try canonical(address)])
        guard let outcome = outcomes.first else { throw .noSuchDevice(address: address) }
        return outcome
    }
}
