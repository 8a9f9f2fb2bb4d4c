import CLinuxUAPI

/// The host's transparent-huge-page mode, `/sys/kernel/mm/transparent_hugepage/enabled`.
public enum TransparentHugePageMode: String, Sendable, CaseIterable, Codable {
    case always, madvise, never

    /// The bracketed word of the sysfs file ("always [madvise] never"); nil when no known word
    /// is bracketed.
    public init?(sysfsText: String) {
        guard let open = sysfsText.firstIndex(of: "["), let close = sysfsText[open...].firstIndex(of: "]") else { return nil }
        self.init(rawValue: String(sysfsText[sysfsText.index(after: open)..<close]))
    }
}

/// A process's own THP switch, prctl(PR_SET_THP_DISABLE).
public enum ProcessTHPSetting: String, Sendable, CaseIterable, Codable {
    /// THP as the system mode says.
    case inherited = "inherited"
    /// PR_SET_THP_DISABLE with flags 0: no huge page for any mapping of the process.
    case disabled = "disabled"
    /// PR_SET_THP_DISABLE with PR_THP_DISABLE_EXCEPT_ADVISED (6.18 and later): only mappings
    /// with MADV_HUGEPAGE.
    case disabledExceptAdvised = "disabled-except-advised"

    /// From PR_GET_THP_DISABLE's result: 0, 1, or 1 | PR_THP_DISABLE_EXCEPT_ADVISED (2).
    public init(prctlResult: Int32) {
        if prctlResult & 1 == 0 {
            self = .inherited
        } else if prctlResult & CPR_THP_DISABLE_EXCEPT_ADVISED != 0 {
            self = .disabledExceptAdvised
        } else {
            self = .disabled
        }
    }
}

/// What madvise said about a mapping: VM_HUGEPAGE (MADV_HUGEPAGE), VM_NOHUGEPAGE
/// (MADV_NOHUGEPAGE), or neither. One clears the other in the kernel.
public enum MappingHugePageAdvice: String, Sendable, CaseIterable, Codable {
    case none
    case hugePage = "MADV_HUGEPAGE"
    case noHugePage = "MADV_NOHUGEPAGE"
}

/// Which rule of the kernel's fault path decided whether vfio-pci's huge_fault handler is ever
/// called with a huge order (2 MiB, 1 GiB) for a BAR mapping.
public enum HugeFaultGate: String, Sendable, Codable, CaseIterable {
    /// Before 6.12 vfio-pci has no huge_fault handler: every BAR page is a 4 KiB mapping.
    case noHandler = "no-huge-fault-handler"
    /// No THP in the kernel (no transparent_hugepage directory in sysfs).
    case noTHP = "thp-not-configured"
    /// A copied sysfs tree that does not say the THP mode: planned as if huge faults are tried.
    case modeUnknown = "thp-mode-unknown"
    /// The mapping carries VM_NOHUGEPAGE.
    case mappingRefused = "madv-nohugepage"
    /// prctl(PR_SET_THP_DISABLE) for the whole process.
    case processDisabled = "prctl-thp-disabled"
    /// prctl(PR_SET_THP_DISABLE, PR_THP_DISABLE_EXCEPT_ADVISED) and the mapping is not advised.
    case processDisabledExceptAdvised = "prctl-thp-disabled-except-advised"
    /// The kernel applies the THP mode to BAR mappings, and it is `never`.
    case modeNever = "thp-never"
    /// The kernel applies the THP mode, it is `madvise`, and the mapping has no MADV_HUGEPAGE.
    case modeMadviseNotAdvised = "thp-madvise-not-advised"
    /// The kernel applies the THP mode, it is `madvise`, and the mapping has MADV_HUGEPAGE.
    case modeMadviseAdvised = "thp-madvise-advised"
    /// The kernel applies the THP mode and it is `always`.
    case modeAlways = "thp-always"
    /// 7.2 and later: the THP mode does not apply to PFN mappings with a huge_fault handler.
    case modeBypassed = "thp-mode-bypassed"

    /// Whether huge orders are tried under this gate.
    public var allowsHugeFaults: Bool {
        switch self {
        case .modeMadviseAdvised, .modeAlways, .modeBypassed, .modeUnknown: true
        default: false
        }
    }
}

/// The host facts that the kernel's fault path checks before it calls a huge_fault handler with
/// a huge order (mm/memory.c `__handle_mm_fault` -> `thp_vma_allowable_order` ->
/// `__thp_vma_allowable_orders`), and the rule, per kernel version. Pure.
///
/// The checks, in the kernel's order: VM_NOHUGEPAGE and the process's prctl switch
/// (`vma_thp_disabled`); then, up to 7.1, the sysfs mode (`never`: none; `madvise`: only with
/// VM_HUGEPAGE; `always`: all) for every non-anonymous VMA, VFIO BAR mappings included. From 7.2
/// `vma_file_bypass_thp_tuneables` exempts PFN-mapped VMAs with a huge_fault handler from the
/// mode ("huge PFN mappings are uncompactable"), so the mode no longer matters for BARs.
public struct HugeFaultHost: Sendable, Equatable {
    /// The kernel's version, which decides whether huge faults exist and whether the mode applies.
    public var kernel: KernelVersion
    /// nil when the kernel has no THP at all, or (with `modeKnown` false) when a copied tree
    /// does not say.
    public var mode: TransparentHugePageMode?
    /// False only when `mode` is nil because a copied tree does not say; `init` sets it true
    /// whenever `mode` is given.
    public var modeKnown: Bool
    /// The process's PR_SET_THP_DISABLE setting.
    public var process: ProcessTHPSetting

    /// The host's facts as given; `modeKnown` is forced true when `mode` is non-nil.
    public init(kernel: KernelVersion, mode: TransparentHugePageMode?, modeKnown: Bool = true, process: ProcessTHPSetting = .inherited) {
        self.kernel = kernel
        self.mode = mode
        self.modeKnown = mode != nil || modeKnown
        self.process = process
    }

    /// The gate a mapping with `advice` meets on this host.
    public func gate(for advice: MappingHugePageAdvice) -> HugeFaultGate {
        guard KernelHistory.hasHugeFault(kernel) else { return .noHandler }
        guard let mode else { return modeKnown ? .noTHP : .modeUnknown }
        if advice == .noHugePage { return .mappingRefused }
        switch process {
        case .inherited: break
        case .disabled: return .processDisabled
        case .disabledExceptAdvised:
            // Before 6.18 the flag did not exist: the kernel refused the prctl (EINVAL), so a
            // process cannot be in this state there; judged as the newer kernels do.
            if advice != .hugePage { return .processDisabledExceptAdvised }
        }
        if KernelHistory.bypassesTHPModeForHugePFNMaps(kernel) { return .modeBypassed }
        switch mode {
        case .always: return .modeAlways
        case .never: return .modeNever
        case .madvise: return advice == .hugePage ? .modeMadviseAdvised : .modeMadviseNotAdvised
        }
    }

    /// One sentence saying why the gate allows or refuses huge BAR mappings.
    public func explanation(for advice: MappingHugePageAdvice) -> String {
        let gate = gate(for: advice)
        switch gate {
        case .noHandler:
            return "kernel \(kernel) is older than 6.12: vfio-pci has no huge_fault handler, every BAR page is a 4 KiB mapping"
        case .modeUnknown:
            return "the sysfs tree does not say the THP mode (no kernel/mm/transparent_hugepage/enabled): planned as if huge faults are tried; give --thp to choose"
        case .noTHP:
            return "the kernel has no transparent huge pages (no /sys/kernel/mm/transparent_hugepage): no huge fault is ever tried"
        case .mappingRefused:
            return "the mapping carries MADV_NOHUGEPAGE: the kernel never tries a huge fault for it"
        case .processDisabled:
            return "this process has THP disabled (prctl PR_SET_THP_DISABLE): the kernel never tries a huge fault for its mappings"
        case .processDisabledExceptAdvised:
            return "this process has THP disabled except where advised (PR_THP_DISABLE_EXCEPT_ADVISED) and the mapping has no MADV_HUGEPAGE"
        case .modeNever:
            return "kernel \(kernel) applies the THP mode to BAR mappings and it is `never`: no huge fault is ever tried"
        case .modeMadviseNotAdvised:
            return "kernel \(kernel) applies the THP mode to BAR mappings and it is `madvise`: only mappings with MADV_HUGEPAGE get huge faults, and this one has none"
        case .modeMadviseAdvised:
            return "kernel \(kernel) applies the THP mode `madvise`, and the mapping has MADV_HUGEPAGE: huge faults are tried"
        case .modeAlways:
            return "kernel \(kernel) applies the THP mode and it is `always`: huge faults are tried"
        case .modeBypassed:
            return "kernel \(kernel) (7.2 or later) does not apply the THP mode to PFN-mapped BARs: huge faults are tried"
        }
    }
}
