/// Huge-page congruence for device memory. KVM maps a guest range with a huge page only where
/// the host mapping uses one, and the host (a VFIO BAR mmap: PMD/PUD pfnmap) uses a huge page
/// only where the host address is aligned to it. Both line up only if gpa and host address are
/// equal modulo the page size; otherwise every 4 KiB page faults on its own (36x slower to
/// fault in a 2 GiB BAR in the lab's hugefault-placement scenario). Pure arithmetic, no kernel.
public enum HugePages {
    /// x86-64's huge page sizes: 2 MiB (PMD) and 1 GiB (PUD).
    public static let x86Sizes: [UInt64] = [1 << 21, 1 << 30]

    /// The largest of `pageSizes` (powers of two) of which the host range `[hostAddress,
    /// hostAddress + size)` holds at least one whole, aligned page: the gpa must match the host
    /// address modulo it. nil when no huge page fits, so any page-aligned gpa will do.
    public static func requiredCongruence(hostAddress: UInt64, size: UInt64, pageSizes: [UInt64]) -> UInt64? {
        let (end, overflow) = hostAddress.addingReportingOverflow(size)
        guard !overflow else { return nil }
        var largest: UInt64?
        for page in pageSizes where page > 0 && page & (page - 1) == 0 {
            let (roundedUp, wrapped) = hostAddress.addingReportingOverflow(page - 1)
            guard !wrapped else { continue }
            let firstAligned = roundedUp & ~(page - 1)
            if firstAligned <= end, end - firstAligned >= page { largest = max(largest ?? 0, page) }
        }
        return largest
    }

    /// Whether `a` and `b` are equal modulo `page` (a power of two).
    public static func isCongruent(_ a: UInt64, _ b: UInt64, modulo page: UInt64) -> Bool {
        (a ^ b) & (page &- 1) == 0
    }

    /// The lowest gpa at or above `minimum` congruent to `hostAddress` modulo the page size
    /// `requiredCongruence` asks for (or aligned to `basePageSize` when none); nil on overflow.
    public static func congruentGuestAddress(hostAddress: UInt64, size: UInt64, atOrAbove minimum: UInt64,
                                             pageSizes: [UInt64] = x86Sizes, basePageSize: UInt64 = 4096) -> UInt64? {
        let page = requiredCongruence(hostAddress: hostAddress, size: size, pageSizes: pageSizes) ?? basePageSize
        let mask = page &- 1
        let candidate = (minimum & ~mask) | (hostAddress & mask)
        if candidate >= minimum { return candidate }
        let (next, overflow) = candidate.addingReportingOverflow(page)
        return overflow ? nil : next
    }
}
