#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PCIInventory
import SystemPackage

/// Changing a physical function's VF count, decided before anything is written. Pure.
public struct SRIOVPlan: Sendable, Equatable {
    /// The physical function.
    public let physicalFunction: PCIAddress
    /// VFs enabled now.
    public let current: Int
    /// VFs asked for.
    public let requested: Int
    /// The most VFs it can have (`sriov_totalvfs`).
    public let total: Int
    /// The VFs that exist now and go away (all of them when the count changes).
    public let removed: [PCIAddress]

    /// True when sriov_numvfs must first go to 0: the kernel refuses a change between two
    /// non-zero counts (EBUSY).
    public var resetsFirst: Bool { current != 0 && requested != 0 && requested != current }
    /// Nothing to do: the count is already the one asked for.
    public var isUnchanged: Bool { requested == current }

    /// Plans `requested` VFs for `address`. `groupsInUse`: IOMMU groups some process holds open
    /// (a VM). Refuses (nothing will change) a PF without SR-IOV, a count above sriov_totalvfs,
    /// and removing VFs that a host driver or a VM is using.
    public static func plan(_ address: PCIAddress, requested: Int, inventory: PCIInventory,
                            groupsInUse: Set<Int>) throws(BindingError) -> SRIOVPlan {
        guard let device = inventory.device(address) else { throw .noSuchDevice(address: address.description) }
        if let physfn = device.physicalFunction {
            throw .sriov("\(address) is a virtual function of \(physfn); give the physical function's address")
        }
        guard let sriov = device.sriov else {
            throw .sriov("\(address) has no SR-IOV capability (no sriov_totalvfs in sysfs): it cannot create VFs")
        }
        guard let total = sriov.totalVFs else {
            throw .sriov("\(address): \(sriov.totalVFsProblem ?? "sriov_totalvfs cannot be read"); vfioctl will not guess how many VFs it supports")
        }
        guard requested >= 0 else { throw .sriov("the VF count must not be negative") }
        guard requested <= total else {
            throw .sriov("\(address) supports at most \(total) VFs (sriov_totalvfs); \(requested) asked")
        }
        let current = sriov.enabledVFs ?? sriov.virtualFunctions.count
        let removed = requested == current ? [] : sriov.virtualFunctions
        var busy: [String] = []
        for vf in removed {
            guard let function = inventory.device(vf) else { continue }
            if let driver = function.driver, !GroupViability.isVFIODriver(driver), driver != "pci-stub" {
                busy.append("\(vf) is in use by the host driver \(driver)")
            } else if let group = function.iommuGroup, groupsInUse.contains(group) {
                busy.append("\(vf): /dev/vfio/\(group) is open (a VM or another VFIO user)")
            }
        }
        guard busy.isEmpty else {
            throw .refused(busy.joined(separator: "; ") + "; stop its users (or unbind the host driver) before changing the VF count")
        }
        return SRIOVPlan(physicalFunction: address, current: current, requested: requested, total: total, removed: removed)
    }
}

extension SRIOVPlan {
    /// A PF on vfio-pci creates VFs only when vfio-pci was loaded with enable_sriov=1 (its
    /// sriov_configure refuses otherwise), and its VFs then open only with the PF's VF token.
    /// `enableSRIOV`: the module parameter as sysfs says it ("Y"/"N"; nil: not readable).
    /// Throws, before anything changes, when VFs are asked of a vfio-pci PF without it.
    public static func checkVFIOPhysicalFunction(_ plan: SRIOVPlan, driver: String?, enableSRIOV: String?) throws(BindingError) {
        guard driver == BindPlan.targetDriver, plan.requested > 0, !plan.isUnchanged else { return }
        guard enableSRIOV == "Y" else {
            throw .sriov("\(plan.physicalFunction) is on vfio-pci, which was loaded without enable_sriov=1 (parameter \(enableSRIOV ?? "unreadable")), so it creates no VFs: reload it with `modprobe -r vfio-pci && modprobe vfio-pci enable_sriov=1` (or `options vfio-pci enable_sriov=1` in /etc/modprobe.d), then run this again")
        }
    }
}

/// Whether some process holds a VFIO group open: the kernel lets one opener at a time have it
/// and answers a second open with EBUSY. The probe's own descriptor is closed at once.
public func vfioGroupIsOpen(_ group: Int, devRoot: String = "/dev") -> Bool {
    let fd = open(devRoot + "/vfio/\(group)", O_RDWR | O_CLOEXEC)
    if fd >= 0 {
        close(fd)
        return false
    }
    return errno == EBUSY
}

/// Carries out an `SRIOVPlan` through sysfs: autoprobe off so no host driver grabs the new VFs,
/// sriov_numvfs (through 0 when changing a non-zero count), each VF bound to vfio-pci with the
/// `Binder`. All or nothing: if a VF cannot be bound, the bound ones are returned, the count goes
/// back to 0 and autoprobe to what it was. The caller holds the `BindingLock`.
public struct SRIOVConfigurator {
    /// The binder whose journal and writes it uses.
    public let binder: Binder
    /// A configurator writing through `binder`.
    public init(binder: Binder) { self.binder = binder }

    var root: SysfsRoot { binder.root }
    func path(_ address: PCIAddress, _ attribute: String) -> String { root.appending("bus/pci/devices/\(address)/\(attribute)") }

    /// What applying a plan did.
    public struct Result: Sendable {
        /// The VFs that exist afterwards.
        public var virtualFunctions: [PCIAddress] = []
        /// What was done to each VF's binding.
        public var outcomes: [BindOutcome] = []
        /// Where it stopped, if it did not finish.
        public var failed: String?
    }

    /// Carries out `plan` with the PF's sriov_drivers_autoprobe off meanwhile (restored after); `rescan` re-reads the inventory once the count changed.
    public func apply(_ plan: SRIOVPlan, rescan: () throws(BindingError) -> PCIInventory) throws(BindingError) -> Result {
        var result = Result()
        if plan.isUnchanged { return result }
        let pf = plan.physicalFunction
        let autoprobePath = path(pf, "sriov_drivers_autoprobe")
        let autoprobe = SysfsReader().readString(autoprobePath)
        try binder.write("0\n", to: autoprobePath)
        defer { if let autoprobe { try? binder.write(autoprobe + "\n", to: autoprobePath) } }
        let numvfs = path(pf, "sriov_numvfs")
        if !plan.removed.isEmpty {
            // vfioctl's journal entries for VFs about to vanish would otherwise outlive them.
            for vf in plan.removed where ((try? binder.journal.entry(for: vf)) ?? nil) != nil {
                _ = try binder.unbind(vf.description)
            }
            try binder.write("0\n", to: numvfs)
        }
        guard plan.requested > 0 else { return result }
        try binder.write("\(plan.requested)\n", to: numvfs)
        let pfPath = root.appending("bus/pci/devices/\(pf)")
        let reader = SysfsReader()
        _ = binder.settle { (0..<plan.requested).allSatisfy { reader.exists(pfPath + "/virtfn\($0)") } }
        let inventory = try rescan()
        let vfs = inventory.device(pf)?.sriov?.virtualFunctions ?? []
        result.virtualFunctions = vfs
        guard vfs.count == plan.requested else {
            try? binder.write("0\n", to: numvfs)
            result.failed = "the kernel created \(vfs.count) of \(plan.requested) VFs; VF count set back to 0"
            return result
        }
        try binder.ensureVFIODriver()
        // One plan per VF (new VFs carry nothing a host depends on), applied all or nothing.
        var plans: [BindPlan] = []
        for vf in vfs {
            guard inventory.device(vf)?.iommuGroup != nil else {
                result.failed = "\(vf) has no IOMMU group"
                break
            }
            plans.append(try BindPlan.bind(vf, wholeGroup: false, force: true, inventory: inventory, facts: HostFacts()))
        }
        if result.failed == nil {
            result.outcomes = try binder.apply(plans)
            if let bad = result.outcomes.first(where: { $0.action != .bound && $0.action != .unchanged }) {
                result.failed = "\(bad.address) could not be bound: \(bad.reason ?? bad.action.rawValue)"
            }
        }
        if let failed = result.failed {
            for outcome in result.outcomes where outcome.action == .bound { _ = try? binder.unbind(outcome.address) }
            try? binder.write("0\n", to: numvfs)
            result.failed = failed + "; every VF returned and the VF count set back to 0"
        }
        return result
    }
}
