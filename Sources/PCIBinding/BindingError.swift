/// Everything that can stop a binding change. Each description is one line that says what
/// happened and what to do.
public enum BindingError: Error, Equatable, CustomStringConvertible {
    case notPermitted(path: String)
    case noSuchDevice(address: String)
    case vfioDriverUnavailable(reason: String)
    case journalUnreadable(path: String, reason: String)
    case journalUnwritable(path: String, reason: String)
    case lockUnavailable(path: String, reason: String)
    case lockTimeout(path: String, seconds: Double, holder: String?)
    case sysfsWrite(path: String, value: String, reason: String)
    case noIOMMUGroup(address: String)
    /// A plan with refused devices was handed to `Binder.apply`.
    case refused(String)
    /// A value read from sysfs that cannot be what the kernel writes there (a crafted tree).
    case untrustedSysfs(path: String, reason: String)
    /// A sysfs write that did not return in time; `state` says where each device is now.
    case sysfsTimeout(path: String, value: String, seconds: Double, state: String)
    /// An SR-IOV request that cannot be carried out as asked (no SR-IOV, a count out of range).
    case sriov(String)
    /// A `--owner` that cannot be used (an unknown user or group, a bad name), or a node whose
    /// owner could not be changed.
    case owner(String)

    /// The same error with `note` added to its reason (what else is known); unchanged when empty.
    func appending(_ note: String) -> BindingError {
        guard !note.isEmpty else { return self }
        switch self {
        case .sysfsWrite(let path, let value, let reason): return .sysfsWrite(path: path, value: value, reason: reason + note)
        case .refused(let evidence): return .refused(evidence + note)
        case .untrustedSysfs(let path, let reason): return .untrustedSysfs(path: path, reason: reason + note)
        case .journalUnwritable(let path, let reason): return .journalUnwritable(path: path, reason: reason + note)
        default: return self
        }
    }

    /// What failed, with what to do where known.
    /// The failure alone, without the "nothing was changed" the description adds for an error
    /// that stops a change before it starts: for the reasons of a change that had begun (a
    /// rollback after a journal failure changed, and undid, a binding).
    public var failureOnly: String {
        switch self {
        case .journalUnwritable(let path, let reason): "cannot write the binding journal \(path): \(reason)"
        case .notPermitted(let path): "cannot write \(path): changing drivers needs root"
        case .vfioDriverUnavailable(let reason): "the vfio-pci driver is not available (\(reason))"
        case .noIOMMUGroup(let address): "\(address) has no IOMMU group"
        case .refused(let evidence): "refused: \(evidence)"
        case .sriov(let reason): reason
        case .owner(let reason): reason
        default: description
        }
    }

    /// The error for people: what went wrong, and what to do about it where there is something.
    public var description: String {
        switch self {
        case .notPermitted(let path):
            "cannot write \(path): changing drivers needs root (run with sudo); nothing was changed"
        case .noSuchDevice(let address):
            "no PCI device \(address); run `vfioctl list` to see the devices"
        case .vfioDriverUnavailable(let reason):
            "the vfio-pci driver is not available (\(reason)): install the kernel's vfio modules or check `modprobe vfio-pci`; nothing was changed"
        case .journalUnreadable(let path, let reason):
            "cannot read the binding journal \(path): \(reason); move it aside only after checking what it records"
        case .journalUnwritable(let path, let reason):
            "cannot write the binding journal \(path): \(reason); nothing was changed (use --state-dir to choose another directory)"
        case .lockUnavailable(let path, let reason):
            "cannot take the binding lock \(path): \(reason)"
        case .lockTimeout(let path, let seconds, let holder):
            "another vfioctl\(holder.map { " (pid \($0))" } ?? "") is changing bindings and held \(path) for \(formatSeconds(seconds)) s; try again when it finishes (or raise --lock-timeout)"
        case .sysfsWrite(let path, let value, let reason):
            "writing \"\(value)\" to \(path) failed: \(reason)"
        case .noIOMMUGroup(let address):
            "\(address) has no IOMMU group: VFIO needs an enabled IOMMU (see `vfioctl groups`); nothing was changed"
        case .refused(let evidence):
            "refused, nothing was changed: \(evidence)"
        case .untrustedSysfs(let path, let reason):
            "refusing \(path): \(reason); the sysfs tree is not what the kernel provides, nothing more was changed"
        case .sysfsTimeout(let path, let value, let seconds, let state):
            "writing \"\(value)\" to \(path) did not return within \(formatSeconds(seconds)) s (a driver's probe or remove is stuck); now: \(state); the journal keeps the entries: run `vfioctl restore` once the kernel settles"
        case .sriov(let reason):
            "\(reason); nothing was changed"
        case .owner(let reason):
            reason
        }
    }
}

/// Seconds for a message, never trapping on a value out of Int's range.
func formatSeconds(_ seconds: Double) -> String {
    guard seconds.isFinite, abs(seconds) < 1e15 else { return "\(seconds)" }
    return seconds == seconds.rounded() ? String(Int64(seconds)) : String(seconds)
}
