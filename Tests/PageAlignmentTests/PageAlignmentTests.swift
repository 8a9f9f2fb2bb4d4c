#if canImport(Glibc)
import Glibc
#endif
import PageAlignment
import Testing

/// The shared page rules against brute force: every value of small address spaces (the rules
/// only use the low bits, so small moduli stand for real page sizes) and every power of two at
/// the top of the 64-bit space, where the additions overflow. References compute in UInt128.
@Suite struct PageAlignmentTests {
    static let powers: [UInt64] = (0..<64).map { 1 << UInt64($0) }
    static let max = UInt128(UInt64.max)

    /// Values near 0, near each power of two and near UInt64.max.
    static let edgeValues: [UInt64] = {
        var values: Set<UInt64> = []
        for delta in 0..<3 as Range<UInt64> {
            values.insert(delta)
            values.insert(UInt64.max - delta)
            for power in powers { values.insert(power &+ delta); values.insert(power &- delta) }
        }
        return values.sorted()
    }()

    static func referenceRoundUp(_ value: UInt64, _ alignment: UInt64) -> UInt64? {
        let a = UInt128(alignment)
        let result = (UInt128(value) + a - 1) / a * a
        return result > max ? nil : UInt64(result)
    }

    @Test func basePageIsTheKernelsPageSize() {
        #expect(BasePage.size == UInt64(sysconf(Int32(_SC_PAGESIZE))))
        #expect(AddressAlignment.isPowerOfTwo(BasePage.size))
        #expect(1 << UInt64(BasePage.shift) == BasePage.size)
    }

    @Test func powersOfTwo() {
        for value in 0..<4097 as Range<UInt64> {
            #expect(AddressAlignment.isPowerOfTwo(value) == Self.powers.contains(value), "\(value)")
        }
        for value in Self.edgeValues { #expect(AddressAlignment.isPowerOfTwo(value) == Self.powers.contains(value), "\(value)") }
    }

    @Test func roundingEveryValueOfASmallSpace() {
        for alignment in Self.powers.prefix(8) {
            for value in 0..<600 as Range<UInt64> {
                #expect(AddressAlignment.roundUp(value, to: alignment) == Self.referenceRoundUp(value, alignment), "\(value) \(alignment)")
                #expect(AddressAlignment.roundDown(value, to: alignment) == value / alignment * alignment)
                #expect(AddressAlignment.isAligned(value, to: alignment) == (value % alignment == 0))
            }
        }
    }

    @Test func roundingOverflowsAtTheTopOfTheAddressSpace() {
        for alignment in Self.powers {
            for value in Self.edgeValues {
                #expect(AddressAlignment.roundUp(value, to: alignment) == Self.referenceRoundUp(value, alignment), "\(value) \(alignment)")
                #expect(AddressAlignment.roundDown(value, to: alignment) == value / alignment * alignment)
            }
        }
        #expect(AddressAlignment.roundUp(UInt64.max, to: 4096) == nil)
        #expect(AddressAlignment.roundUp(UInt64.max - 4095, to: 4096) == UInt64.max - 4095)
        #expect(AddressAlignment.roundUp(UInt64.max, to: 1) == UInt64.max)
    }

    static func referenceCongruent(_ floor: UInt64, _ residue: UInt64, _ modulus: UInt64) -> UInt64? {
        let m = UInt128(modulus)
        let wanted = UInt128(residue) % m
        var candidate = UInt128(floor) / m * m + wanted
        if candidate < UInt128(floor) { candidate += m }
        return candidate > max ? nil : UInt64(candidate)
    }

    @Test func congruentAddressEveryFloorAndResidue() {
        for modulus in Self.powers.prefix(7) {
            for floor in 0..<300 as Range<UInt64> {
                for residue in 0..<(2 * modulus + 1) {
                    let got = AddressAlignment.congruent(atOrAbove: floor, residue: residue, modulus: modulus)
                    // Brute force: the first address from the floor up with the residue.
                    let brute = (floor..<(floor + modulus)).first { $0 % modulus == residue % modulus }
                    #expect(got == brute, "floor \(floor) residue \(residue) modulus \(modulus)")
                }
            }
        }
        for modulus in Self.powers {
            for floor in Self.edgeValues {
                for residue in [0, 1, modulus &- 1, modulus, UInt64.max, 0x1000] {
                    #expect(AddressAlignment.congruent(atOrAbove: floor, residue: residue, modulus: modulus)
                            == Self.referenceCongruent(floor, residue, modulus), "\(floor) \(residue) \(modulus)")
                }
            }
        }
    }

    /// The largest page of `sizes` (powers of two only) with an aligned page inside the range.
    static func referenceRequired(_ start: UInt64, _ size: UInt64, _ sizes: [UInt64]) -> UInt64? {
        guard UInt128(start) + UInt128(size) <= max else { return nil }
        return sizes.filter(AddressAlignment.isPowerOfTwo).filter { page in
            guard let first = referenceRoundUp(start, page) else { return false }
            return UInt128(first) + UInt128(page) <= UInt128(start) + UInt128(size)
        }.max()
    }

    @Test func requiredCongruenceEveryRangeOfASmallSpace() {
        // 12 is no power of two: ignored, as a page size it cannot be.
        for sizes in [[4, 16, 64], [16], [64, 4], [4, 12, 16], []] as [[UInt64]] {
            for start in 0..<160 as Range<UInt64> {
                for size in 0..<160 as Range<UInt64> {
                    // Brute force: every aligned block inside the range, the largest size wins.
                    let brute = sizes.filter(AddressAlignment.isPowerOfTwo).filter { page in
                        stride(from: 0, through: start + size, by: Int(page)).contains { $0 >= start && $0 + page <= start + size }
                    }.max()
                    #expect(HugePages.requiredCongruence(hostAddress: start, size: size, pageSizes: sizes) == brute,
                            "start \(start) size \(size) sizes \(sizes)")
                }
            }
        }
    }

    @Test func requiredCongruenceAtTheTopOfTheAddressSpace() {
        let sizes = HugePages.x86Sizes + [4096]
        for start in Self.edgeValues {
            for size in Self.edgeValues + [4096, 1 << 21, 1 << 30, 3 << 30] {
                #expect(HugePages.requiredCongruence(hostAddress: start, size: size, pageSizes: sizes)
                        == Self.referenceRequired(start, size, sizes), "\(start) \(size)")
            }
        }
        // A range ending at 2^64 wraps to 0: refused, as the kernel cannot map it either.
        let lastGiB = UInt64.max - (1 << 30) + 1
        #expect(HugePages.requiredCongruence(hostAddress: lastGiB, size: 1 << 30, pageSizes: sizes) == nil)
        #expect(HugePages.requiredCongruence(hostAddress: lastGiB - (1 << 30), size: 1 << 30, pageSizes: sizes) == 1 << 30)
        #expect(HugePages.requiredCongruence(hostAddress: lastGiB - (1 << 30) + 4096, size: 1 << 30, pageSizes: sizes) == 1 << 21)
    }

    @Test func congruenceIsEqualityOfTheLowBits() {
        for modulus in Self.powers.prefix(6) {
            for a in 0..<70 as Range<UInt64> {
                for b in 0..<70 as Range<UInt64> {
                    #expect(HugePages.isCongruent(a, b, modulo: modulus) == (a % modulus == b % modulus))
                }
            }
        }
        #expect(HugePages.isCongruent(UInt64.max, (1 << 30) - 1, modulo: 1 << 30))
    }

    @Test func congruentGuestAddressUsesTheRequiredPage() {
        let sizes: [UInt64] = [16, 64]
        for host in 0..<130 as Range<UInt64> {
            for size in [0, 16, 40, 64, 100, 128] as [UInt64] {
                for minimum in 0..<130 as Range<UInt64> {
                    let page = HugePages.requiredCongruence(hostAddress: host, size: size, pageSizes: sizes) ?? 4
                    let brute = (minimum..<(minimum + page)).first { $0 % page == host % page }
                    #expect(HugePages.congruentGuestAddress(hostAddress: host, size: size, atOrAbove: minimum,
                                                            pageSizes: sizes, basePageSize: 4) == brute)
                }
            }
        }
        #expect(HugePages.congruentGuestAddress(hostAddress: 0x7f00_0010_0000, size: 1 << 23, atOrAbove: UInt64.max - 0xfff) == nil)
    }

    /// Obstacle sets for the lowest-free search: every subset of these in a 96-byte window.
    static let obstacles: [Range<UInt64>] = [3..<9, 8..<20, 30..<31, 40..<64, 70..<80]

    @Test func lowestFreeEveryObstacleSetSpanAndResidue() {
        let window: Range<UInt64> = 2..<96
        for mask in 0..<(1 << Self.obstacles.count) {
            let taken = Self.obstacles.indices.filter { mask & (1 << $0) != 0 }.map { Self.obstacles[$0] }
            for modulus in [1, 2, 4, 8, 16, 32] as [UInt64] {
                for residue in 0..<modulus {
                    for span in [0, 1, 3, 8, 11, 25, 60, 95] as [UInt64] {
                        let brute = window.first { start in
                            start % modulus == residue && start + span <= window.upperBound
                                && !taken.contains { $0.overlaps(start..<(start + span)) }
                        }
                        let got = AddressAlignment.lowestFree(span: span, modulus: modulus, residue: residue,
                                                              window: window, taken: taken)
                        #expect(got == brute, "taken \(taken) modulus \(modulus) residue \(residue) span \(span)")
                    }
                }
            }
        }
    }

    @Test func lowestFreeAtTheTopOfTheAddressSpace() {
        let gib: UInt64 = 1 << 30
        let top = UInt64.max - gib + 1   // the last 1 GiB-aligned address
        let window = (top - 4 * gib)..<UInt64.max
        // [top, 2^64) cannot be a Range<UInt64> ending in UInt64.max + 1: the last free GiB is out.
        #expect(AddressAlignment.lowestFree(span: gib, modulus: gib, residue: 0, window: window, taken: []) == top - 4 * gib)
        #expect(AddressAlignment.lowestFree(span: gib, modulus: gib, residue: 0, window: window,
                                            taken: [(top - 4 * gib)..<(top - gib)]) == top - gib)
        #expect(AddressAlignment.lowestFree(span: gib, modulus: gib, residue: 0, window: window,
                                            taken: [(top - 4 * gib)..<top]) == nil)
        #expect(AddressAlignment.lowestFree(span: gib, modulus: gib, residue: 0, window: window,
                                            taken: [(top - 4 * gib)..<(top - 2 * gib)]) == top - 2 * gib)
        // The congruent address past the last obstacle would wrap.
        #expect(AddressAlignment.lowestFree(span: 4096, modulus: gib, residue: 0x1000, window: 0..<UInt64.max,
                                            taken: [0..<(top + 0x2000)]) == nil)
    }

    @Test func lowestFreeStopsOnAnObstacleThatDoesNotMoveTheSearch() {
        var calls = 0
        let got = AddressAlignment.lowestFree(span: 16, modulus: 16, residue: 0, window: 0..<1024) { candidate in
            calls += 1
            return candidate.lowerBound   // claims to block, ends where the candidate starts
        }
        #expect(got == nil)
        #expect(calls == 1)
    }
}
