import HostKernel
import KVM
import PageAlignment

/// The page size KVM can map a BAR memslot with. KVM's stage-2 entry for a gfn is the smaller of
/// the host mapping's level at that address (host_pfn_mapping_level: what the BAR's huge faults
/// installed) and what the memslot allows (gpa and host address congruent modulo the page, a
/// whole aligned page inside the slot). The host side is 4 KiB where the host's THP rule refuses
/// huge faults for the mapping (`HugeFaultHost`). Pure.
public enum MemslotPageSize {
    /// The base page size every mapping has at least.
    public static let basePage: UInt64 = BasePage.size

    /// The largest of `pageSizes` at which `a` and `b` are congruent and an aligned page of `a`'s
    /// side lies wholly inside `[a, a + size)`; `basePage` when none.
    static func largestShared(_ a: UInt64, _ b: UInt64, size: UInt64, pageSizes: [UInt64]) -> UInt64 {
        var best = basePage
        for page in pageSizes where page > best && HugePages.isCongruent(a, b, modulo: page) {
            if HugePages.requiredCongruence(hostAddress: a, size: size, pageSizes: [page]) == page { best = page }
        }
        return best
    }

    /// The largest page the host maps the area with: congruent to its bus address and tried by
    /// the fault path; 4 KiB when the bus address is unknown or huge faults are refused.
    public static func host(hostAddress: UInt64, physicalStart: UInt64?, size: UInt64, hugeFaultsTried: Bool,
                            pageSizes: [UInt64] = HugePages.x86Sizes) -> UInt64 {
        guard hugeFaultsTried, let physicalStart else { return basePage }
        return largestShared(hostAddress, physicalStart, size: size, pageSizes: pageSizes)
    }

    /// The largest page KVM can use for the slot: the host's page, capped by the gpa's congruence.
    public static func kvm(hostAddress: UInt64, guestPhysicalAddress: UInt64, size: UInt64, hostPage: UInt64,
                           pageSizes: [UInt64] = HugePages.x86Sizes) -> UInt64 {
        min(hostPage, largestShared(hostAddress, guestPhysicalAddress, size: size, pageSizes: pageSizes))
    }
}
