#if canImport(Glibc)
import Glibc
#endif

// The page-geometry rules every layer shares: the base page size, rounding, congruence and
// the huge page a range can hold. VFIO (where a BAR mapping goes), KVM (memslot rules) and
// Passthrough (where a BAR goes in the guest) all import this one leaf target, so each rule
// has one home. Pure arithmetic, no kernel, every addition checked for overflow.

/// The host's base page (a PTE's worth), read once.
public enum BasePage {
    /// sysconf(_SC_PAGESIZE): the unit of every mmap, memslot and DMA mapping.
    public static let size: UInt64 = {
        let value = sysconf(Int32(_SC_PAGESIZE))
        // Linux always answers with a power of two; anything else is a broken libc, and every
        // rule here would be wrong with it.
        precondition(value > 0 && value & (value - 1) == 0, "sysconf(_SC_PAGESIZE) returned \(value)")
        return UInt64(value)
    }()

    /// log2 of `size`.
    public static let shift: Int = size.trailingZeroBitCount
}

/// Rounding and congruence modulo powers of two.
public enum AddressAlignment {
    /// Whether `value` is a power of two (0 is not).
    public static func isPowerOfTwo(_ value: UInt64) -> Bool { value != 0 && value & (value - 1) == 0 }

    /// Whether `value` is a multiple of `alignment` (a power of two).
    public static func isAligned(_ value: UInt64, to alignment: UInt64) -> Bool { value & (alignment &- 1) == 0 }

    /// The lowest multiple of `alignment` (a power of two) at or above `value`; nil when it
    /// would pass UInt64.max.
    public static func roundUp(_ value: UInt64, to alignment: UInt64) -> UInt64? {
        let (sum, overflow) = value.addingReportingOverflow(alignment &- 1)
        return overflow ? nil : sum & ~(alignment &- 1)
    }

    /// The highest multiple of `alignment` (a power of two) at or below `value`.
    public static func roundDown(_ value: UInt64, to alignment: UInt64) -> UInt64 { value & ~(alignment &- 1) }

    /// The lowest address at or above `floor` equal to `residue` modulo `modulus` (a power of
    /// two; only `residue`'s low bits count), or nil when it would pass UInt64.max.
    public static func congruent(atOrAbove floor: UInt64, residue: UInt64, modulus: UInt64) -> UInt64? {
        let mask = modulus &- 1
        let candidate = (floor & ~mask) | (residue & mask)
        if candidate >= floor { return candidate }
        let (next, overflow) = candidate.addingReportingOverflow(modulus)
        return overflow ? nil : next
    }

    /// The lowest a ≡ `residue` (mod `modulus`) with [a, a + span) inside `window` and free.
    /// `blockedUntil` answers, for a candidate range, the end of something it overlaps (nil when
    /// it is free); the search goes on from there, so each step returns or passes one obstacle.
    public static func lowestFree(span: UInt64, modulus: UInt64, residue: UInt64, window: Range<UInt64>,
                                  blockedUntil: (Range<UInt64>) -> UInt64?) -> UInt64? {
        var floor = window.lowerBound
        while true {
            guard let start = congruent(atOrAbove: floor, residue: residue, modulus: modulus) else { return nil }
            let (end, wraps) = start.addingReportingOverflow(span)
            guard !wraps, end <= window.upperBound else { return nil }
            guard let next = blockedUntil(start..<end) else { return start }
            // An obstacle that overlaps [start, end) ends above start; anything else would loop.
            guard next > start else { return nil }
            floor = next
        }
    }

    /// `lowestFree` clear of every range in `taken`.
    public static func lowestFree(span: UInt64, modulus: UInt64, residue: UInt64, window: Range<UInt64>,
                                  taken: [Range<UInt64>]) -> UInt64? {
        lowestFree(span: span, modulus: modulus, residue: residue, window: window) { candidate in
            taken.filter { $0.overlaps(candidate) }.map(\.upperBound).max()
        }
    }
}

/// Huge-page congruence. A huge page of size p maps an aligned block of p bytes, so a host
/// mapping (a VFIO BAR mmap: PMD/PUD pfnmap) uses one only where its address is aligned to p,
/// and KVM maps a guest range huge only where the host mapping is huge and gpa and host
/// address are equal modulo p; otherwise every base page faults on its own (36x slower to
/// fault in a 2 GiB BAR in the lab's hugefault-placement scenario). The same rule places a BAR
/// mmap: its virtual address must be congruent to its bus address.
public enum HugePages {
    /// x86-64's huge page sizes: 2 MiB (PMD) and 1 GiB (PUD).
    public static let x86Sizes: [UInt64] = [1 << 21, 1 << 30]

    /// The largest of `pageSizes` (powers of two; others are ignored) of which the range
    /// `[hostAddress, hostAddress + size)` holds at least one whole, aligned page: a second
    /// address must match `hostAddress` modulo it. nil when none fits or the range wraps.
    public static func requiredCongruence(hostAddress: UInt64, size: UInt64, pageSizes: [UInt64]) -> UInt64? {
        let (end, overflow) = hostAddress.addingReportingOverflow(size)
        guard !overflow else { return nil }
        var largest: UInt64?
        for page in pageSizes where AddressAlignment.isPowerOfTwo(page) {
            guard let firstAligned = AddressAlignment.roundUp(hostAddress, to: page) else { continue }
            if firstAligned <= end, end - firstAligned >= page { largest = max(largest ?? 0, page) }
        }
        return largest
    }

    /// Whether `a` and `b` are equal modulo `page` (a power of two).
    public static func isCongruent(_ a: UInt64, _ b: UInt64, modulo page: UInt64) -> Bool {
        AddressAlignment.isAligned(a ^ b, to: page)
    }

    /// The lowest gpa at or above `minimum` congruent to `hostAddress` modulo the page size
    /// `requiredCongruence` asks for (or aligned to `basePageSize` when none); nil on overflow.
    public static func congruentGuestAddress(hostAddress: UInt64, size: UInt64, atOrAbove minimum: UInt64,
                                             pageSizes: [UInt64] = x86Sizes, basePageSize: UInt64 = BasePage.size) -> UInt64? {
        let page = requiredCongruence(hostAddress: hostAddress, size: size, pageSizes: pageSizes) ?? basePageSize
        return AddressAlignment.congruent(atOrAbove: minimum, residue: hostAddress, modulus: page)
    }
}
