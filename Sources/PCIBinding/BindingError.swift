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
    /// An SR-IOV request that cannot be carried out as asked (no SR-IOV, a count out of range).
    case sriov(String)

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
            "another vfioctl\(holder.map { " (pid \($0))" } ?? "") is changing bindings and held \(path) for \(Int(seconds)) s; try again when it finishes (or raise --lock-timeout)"
        case .sysfsWrite(let path, let value, let reason):
            "writing \"\(value)\" to \(path) failed: \(reason)"
        case .noIOMMUGroup(let address):
            "\(address) has no IOMMU group: VFIO needs an enabled IOMMU (see `vfioctl groups`); nothing was changed"
        case .refused(let evidence):
            "refused, nothing was changed: \(evidence)"
        case .sriov(let reason):
            "\(reason); nothing was changed"
        }
    }
}
