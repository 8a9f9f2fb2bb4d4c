@testable import Passthrough
import Testing

/// The page size KVM can map a BAR memslot with: the host mapping's page, capped by the slot.
@Suite("memslot page size")
struct MemslotPageSizeTests {
    static let mib: UInt64 = 1 << 20, gib: UInt64 = 1 << 30

    /// Brute force: the largest of 1 GiB, 2 MiB for which both addresses agree modulo the page
    /// and some page-aligned block of `a`'s side lies inside [a, a + size).
    static func reference(_ a: UInt64, _ b: UInt64, _ size: UInt64) -> UInt64 {
        for page in [gib, 2 * mib] where a % page == b % page {
            var block = (a + page - 1) / page * page
            while block + page <= a + size {
                if block >= a { return page }
                block += page
            }
        }
        return 4096
    }

    @Test func matchesBruteForce() {
        let mib = Self.mib, gib = Self.gib
        let offsets: [UInt64] = [0, 4096, 2 * mib - 4096, 2 * mib, 2 * mib + 4096, gib - 2 * mib, gib]
        let sizes: [UInt64] = [4096, 2 * mib, 2 * mib + 4096, 4 * mib, gib, gib + 2 * mib, 2 * gib]
        for hostOffset in offsets {
            for otherOffset in offsets {
                for size in sizes {
                    let host = 7 * gib + hostOffset, other = 3 * gib + otherOffset
                    #expect(MemslotPageSize.largestShared(host, other, size: size, pageSizes: [2 * mib, gib]) == Self.reference(host, other, size),
                            "host +0x\(String(hostOffset, radix: 16)) other +0x\(String(otherOffset, radix: 16)) size 0x\(String(size, radix: 16))")
                }
            }
        }
    }

    @Test func hostPageFollowsTheHugeFaultRule() {
        // ivshmem's 2 GiB BAR2 at vfioctl's placement: 1 GiB pages where huge faults are tried.
        #expect(MemslotPageSize.host(hostAddress: 5 * Self.gib, physicalStart: 6 * Self.gib, size: 2 * Self.gib, hugeFaultsTried: true) == Self.gib)
        #expect(MemslotPageSize.host(hostAddress: 5 * Self.gib, physicalStart: 6 * Self.gib, size: 2 * Self.gib, hugeFaultsTried: false) == 4096)
        #expect(MemslotPageSize.host(hostAddress: 5 * Self.gib, physicalStart: nil, size: 2 * Self.gib, hugeFaultsTried: true) == 4096)
        // 4 KiB off the congruent address: no huge page at all.
        #expect(MemslotPageSize.host(hostAddress: 5 * Self.gib + 4096, physicalStart: 6 * Self.gib, size: 2 * Self.gib, hugeFaultsTried: true) == 4096)
    }

    @Test func kvmTakesTheSmallerOfHostAndSlot() {
        let host = 5 * Self.gib
        #expect(MemslotPageSize.kvm(hostAddress: host, guestPhysicalAddress: Self.gib, size: Self.gib, hostPage: Self.gib) == Self.gib)
        #expect(MemslotPageSize.kvm(hostAddress: host, guestPhysicalAddress: Self.gib + 2 * Self.mib, size: Self.gib, hostPage: Self.gib) == 2 * Self.mib)
        #expect(MemslotPageSize.kvm(hostAddress: host, guestPhysicalAddress: Self.gib, size: Self.gib, hostPage: 4096) == 4096)
        #expect(MemslotPageSize.kvm(hostAddress: host, guestPhysicalAddress: Self.gib + 4096, size: Self.gib, hostPage: Self.gib) == 4096)
    }
}
