/// A kernel release such as "6.12.95+deb12-amd64", reduced to the numbers that decide which
/// known passthrough issues and fault-path rules apply. Pure.
public struct KernelVersion: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// The first number of the release: 6 in 6.12.95.
    public let major: Int
    /// The second number: 12 in 6.12.95.
    public let minor: Int
    /// The third number, 0 when the release has none: 95 in 6.12.95.
    public let patch: Int
    /// The release text as given ("X.Y.Z" when made from numbers); shown, never compared.
    public let release: String

    /// Parses the leading "X.Y[.Z]"; anything after (-rc1, +deb12-amd64) is kept in `release`.
    public init?(release: String) {
        var numbers: [Int] = []
        var current = ""
        for character in release {
            if character.isASCII, character.isNumber {
                current.append(character)
            } else if character == ".", !current.isEmpty, numbers.count < 2 {
                numbers.append(Int(current) ?? 0)
                current = ""
            } else {
                break
            }
        }
        if !current.isEmpty { numbers.append(Int(current) ?? 0) }
        guard numbers.count >= 2 else { return nil }
        major = numbers[0]
        minor = numbers[1]
        patch = numbers.count > 2 ? numbers[2] : 0
        self.release = release
    }

    /// The version with these numbers; `release` is written "major.minor.patch".
    public init(_ major: Int, _ minor: Int, _ patch: Int = 0) {
        self.major = major
        self.minor = minor
        self.patch = patch
        release = "\(major).\(minor).\(patch)"
    }

    /// Orders by (major, minor, patch); the text after the numbers is ignored.
    public static func < (lhs: KernelVersion, rhs: KernelVersion) -> Bool {
        (lhs.major, lhs.minor, lhs.patch) < (rhs.major, rhs.minor, rhs.patch)
    }

    /// Equal numbers: 6.12.95+deb12-amd64 equals 6.12.95.
    public static func == (lhs: KernelVersion, rhs: KernelVersion) -> Bool {
        (lhs.major, lhs.minor, lhs.patch) == (rhs.major, rhs.minor, rhs.patch)
    }

    /// Hashes the numbers only, as `==` compares them.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(major)
        hasher.combine(minor)
        hasher.combine(patch)
    }

    /// The release text.
    public var description: String { release }

    var series: (Int, Int) { (major, minor) }
}

/// Facts from the kernel's history that bite passthrough users, judged by version. Distribution
/// kernels backport fixes, so a verdict by version says "by version" and how to check for real.
public enum KernelHistory {
    /// vfio-pci maps BARs with PMD/PUD entries on demand (huge_pfnmap, commit f9e54c3a2f5b).
    public static func hasHugeFault(_ version: KernelVersion) -> Bool {
        missing(.linux, version).allSatisfy { $0.id != "linux.vfio-huge-fault" }
    }

    /// "vfio/pci: Align huge faults to order" (c1d9dac0db16, v6.15-rc6, May 2025; queued for the
    /// 6.12.y and 6.14.y stable trees on 2025-05-12, released in 6.12.29 and 6.14.7). Without it,
    /// racing aligned and unaligned faults on one PMD could end in VM_FAULT_OOM and QEMU's
    /// "kvm run failed Bad address" (kernel bugzilla 220057). 6.13 reached end of life first.
    public enum HugeFaultAlignment: Equatable, Sendable {
        case notApplicable
        case fixed
        case affected
    }

    /// Whether `version` has the huge-fault alignment fix, by version: `notApplicable` before
    /// 6.12 (no huge_fault handler), `affected` for 6.12.0-28, every 6.13 and 6.14.0-6, else
    /// `fixed`. A distribution backport is not seen.
    public static func hugeFaultAlignment(_ version: KernelVersion) -> HugeFaultAlignment {
        guard hasHugeFault(version) else { return .notApplicable }
        switch version.series {
        case (6, 12): return version.patch >= 29 ? .fixed : .affected
        case (6, 13): return .affected
        case (6, 14): return version.patch >= 7 ? .fixed : .affected
        default: return .fixed
        }
    }

    /// Whether the fault path leaves the THP mode out for PFN-mapped VMAs with a huge_fault
    /// handler (mm/huge_memory.c `vma_file_bypass_thp_tuneables`: "Huge PFN mappings are
    /// uncompactable so the policy doesn't apply"). Present in Debian's 7.2 and 7.3 sources,
    /// absent from 6.12's, where `__thp_vma_allowable_orders` enforces the mode for every
    /// non-anonymous VMA before it trusts a huge_fault handler. Measured in the lab on both.
    public static func bypassesTHPModeForHugePFNMaps(_ version: KernelVersion) -> Bool {
        version >= KernelVersion(7, 2)
    }

    /// 5.1's "KVM: x86/mmu: Zap only the relevant pages when removing a memslot" (4e103134b862)
    /// made guests with assigned GPUs unstable; reverted by d012a06ab1d2 in 5.3 and 5.2.11.
    public static func hasMemslotZapRegression(_ version: KernelVersion) -> Bool {
        switch version.series {
        case (5, 1): return true
        case (5, 2): return version.patch < 11
        default: return false
        }
    }
}
