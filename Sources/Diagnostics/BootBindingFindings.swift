import PCIBinding
import PCIInventory

extension Doctor {
    /// `boot.bindings`: every device some boot-time mechanism binds (kernel command line,
    /// modprobe.d, driverctl, udev rules, vfioctl's rule and early files), with the file each is
    /// written in, and the plan's conflicts. Info when nothing binds at boot.
    public static func bootBindings(_ plan: BootBindingPlan) -> Finding {
        let bound = plan.bindings.keys.sorted()
        var evidence = bound.map { address in
            "\(address): " + plan.sources(for: address).map { "\($0.mechanism.rawValue) → \($0.driver) (\($0.location))" }.joined(separator: "; ")
        }
        evidence += plan.findings.map(\.description)
        let worst = plan.findings.map(\.status).max { rank($0) < rank($1) }
        let status: Finding.Status
        switch worst {
        case .problem?: status = .problem
        case .warning?: status = .warning
        default: status = bound.isEmpty ? .info : .ok
        }
        let title = bound.isEmpty ? "boot-time binding: no device is bound to a driver at boot by the command line, modprobe.d, driverctl or udev"
            : "boot-time binding: \(bound.count) device\(bound.count == 1 ? "" : "s") bound at boot" + (plan.findings.isEmpty ? "" : ", \(plan.findings.count) to look at")
        return Finding(id: "boot.bindings", status: status, title: title, evidence: evidence,
                       remedy: status == .problem || status == .warning ? "see each line above; `vfioctl persist check ADDRESS` judges one device" : nil)
    }

    static func rank(_ status: BootFinding.Status) -> Int {
        switch status {
        case .ok: 0
        case .warning: 1
        case .problem: 2
        }
    }
}
