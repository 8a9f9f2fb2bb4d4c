@testable import GuestMMIOWindow
import Testing

/// The window rule on the fixtures (a 24 GiB GPU, eight 512 GiB GPUs, the workstation's
/// GPU) and edge cases; the figures in the expectations are worked by hand in the comments.
@Suite("guest 64-bit MMIO window rule")
struct MMIOWindowRuleTests {
    static let gib: UInt64 = 1 << 30
    static let mib: UInt64 = 1 << 20
    static let tib: UInt64 = 1 << 40

    /// A 24 GiB card with Resizable BAR on: BAR1 32 GiB and BAR3 32 MiB, both 64-bit prefetchable.
    static let card24GiB: [UInt64] = [32 << 30, 32 << 20]
    /// A 512 GiB-BAR accelerator (BAR 512 GiB + a 32 MiB BAR), eight of them.
    static let eight512GiB: [UInt64] = Array(repeating: [512 << 30, 32 << 20], count: 8).flatMap { $0 }

    @Test func oneGPUWith24GiBOverflowsOVMFsDefaultWindow() {
        // 16 GiB RAM: 2 GiB below 4 GiB, 14 GiB above, so RAM ends at 18 GiB. Span 32 GiB + 32 MiB,
        // window 33 GiB + 1 GiB headroom = 34 GiB, based at 18 GiB aligned to 32 GiB = 32 GiB, ending
        // at 66 GiB: 37 bits, within QEMU's default 40.
        let plan = MMIOWindowRule.plan(MMIOWindowRequest(barSizes: Self.card24GiB, guestMemory: 16 * Self.gib, hostPhysicalAddressBits: 39))
        #expect(plan.placedBARs == [32 * Self.gib, 32 * Self.mib])
        #expect(plan.span == 32 * Self.gib + 32 * Self.mib)
        #expect(plan.window == 34 * Self.gib)
        #expect(plan.windowMiB == 34 * 1024)
        #expect(plan.windowBase == 32 * Self.gib)
        #expect(plan.windowEnd == 66 * Self.gib)
        #expect(plan.guestAddressBits == 37)
        #expect(!plan.needsAddressBits)
        #expect(plan.hostHolds == true)
        let fits = Dictionary(uniqueKeysWithValues: plan.verdicts.map { ($0.firmware, $0.fitsByDefault) })
        // OVMF's fixed 32 GiB window cannot hold 32 GiB + 32 MiB; with -cpu host on this 39-bit
        // host OVMF trusts the bits and opens 2^36 = 64 GiB at 448 GiB instead.
        #expect(fits == [.ovmfClassic: false, .ovmfDynamic: true, .seaBIOS: true])
        #expect(plan.qemuArguments == ["-fw_cfg", "name=opt/ovmf/X-PciMmio64Mb,string=34816"])
        #expect(plan.libvirtElements == """
            <sysinfo type='fwcfg'>
              <entry name='opt/ovmf/X-PciMmio64Mb'>34816</entry>
            </sysinfo>
            """)
        #expect(plan.cloudHypervisorArguments.isEmpty)
    }

    @Test func theSameCardWithoutReBARFitsEveryDefault() {
        let plan = MMIOWindowRule.plan(MMIOWindowRequest(barSizes: [256 * Self.mib, 32 * Self.mib], guestMemory: 16 * Self.gib, hostPhysicalAddressBits: 39))
        #expect(plan.verdicts.allSatisfy { $0.fitsByDefault })
        #expect(!plan.needsSettings)
        #expect(plan.qemuArguments.isEmpty)
        #expect(plan.libvirtElements.isEmpty)
    }

    @Test func eightGPUsWith512GiBBARsNeedTheWindowAndAddressBits() {
        // 1 TiB RAM ends at 1 TiB + 2 GiB. Span 4 TiB + 256 MiB; window 4 TiB + 1 GiB + 1 GiB;
        // base aligned to 4 TiB = 4 TiB; end 8 TiB + 2 GiB: 44 bits.
        let plan = MMIOWindowRule.plan(MMIOWindowRequest(barSizes: Self.eight512GiB, guestMemory: Self.tib, hostPhysicalAddressBits: 46))
        #expect(plan.span == 4 * Self.tib + 256 * Self.mib)
        #expect(plan.window == 4 * Self.tib + 2 * Self.gib)
        #expect(plan.windowMiB == 4 * 1024 * 1024 + 2048)
        #expect(plan.windowBase == 4 * Self.tib)
        #expect(plan.windowEnd == 8 * Self.tib + 2 * Self.gib)
        #expect(plan.guestAddressBits == 44)
        #expect(plan.minimumGuestAddressBits == 44)
        #expect(plan.hostHolds == true)
        // Fixed window and SeaBIOS's 40 default bits fail; -cpu host on a 46-bit host gets OVMF's
        // dynamic window, 2^43 = 8 TiB at 56 TiB, which holds 4 TiB.
        let fits = Dictionary(uniqueKeysWithValues: plan.verdicts.map { ($0.firmware, $0.fitsByDefault) })
        #expect(fits == [.ovmfClassic: false, .ovmfDynamic: true, .seaBIOS: false])
        #expect(plan.qemuArguments == ["-fw_cfg", "name=opt/ovmf/X-PciMmio64Mb,string=4196352", "-cpu", "host,phys-bits=44"])
        #expect(plan.libvirtElements.contains("<maxphysaddr mode='emulate' bits='44'/>"))
        #expect(plan.cloudHypervisorArguments.isEmpty)
    }

    @Test func eight512GiBGPUsFitNoGuestOnADesktopCPU() {
        // 39 physical bits (512 GiB) cannot reach a window that ends past 8 TiB, whatever the RAM.
        let plan = MMIOWindowRule.plan(MMIOWindowRequest(barSizes: Self.eight512GiB, guestMemory: 8 * Self.gib, hostPhysicalAddressBits: 39))
        #expect(plan.hostHolds == false)
        #expect(plan.someGuestHolds == false)
    }

    @Test func moreRAMCanPushTheWindowPastTheHost() {
        // One 32 GiB BAR: with 8 GiB RAM the window ends at 64 + 34 GiB (37 bits); with 64 TiB of
        // RAM it ends past 2^46, but a guest with less RAM still fits a 46-bit host.
        let small = MMIOWindowRule.plan(MMIOWindowRequest(barSizes: [32 * Self.gib], guestMemory: 8 * Self.gib, hostPhysicalAddressBits: 46))
        #expect(small.hostHolds == true)
        let huge = MMIOWindowRule.plan(MMIOWindowRequest(barSizes: [32 * Self.gib], guestMemory: 64 * Self.tib, hostPhysicalAddressBits: 46))
        #expect(huge.guestAddressBits == 46 + 1)
        #expect(huge.hostHolds == false)
        #expect(huge.someGuestHolds == true)
    }

    @Test func theWorkstationGPUFitsEveryDefault() {
        // GPUWorkstation's GPU: one 64-bit prefetchable BAR of 256 MiB.
        let plan = MMIOWindowRule.plan(MMIOWindowRequest(barSizes: [256 * Self.mib], guestMemory: 8 * Self.gib, hostPhysicalAddressBits: 39))
        #expect(plan.span == 256 * Self.mib)
        #expect(plan.guestAddressBits == 34)   // RAM ends at 10 GiB; window 2 GiB at 10 GiB
        #expect(!plan.needsSettings && !plan.needsAddressBits)
        #expect(plan.hostHolds == true)
    }

    /// OVMF 2022.11's two rules, worked from MemDetect.c: which CPU bits it trusts, and where
    /// each window lands.
    @Test func ovmfWindowFollowsTheFirmwaresSource() {
        #expect(MMIOWindowRule.ovmfTrustsPhysBits(40, intel: false))
        #expect(!MMIOWindowRule.ovmfTrustsPhysBits(40, intel: true))
        #expect(MMIOWindowRule.ovmfTrustsPhysBits(39, intel: true))
        #expect(!MMIOWindowRule.ovmfTrustsPhysBits(38, intel: true))
        #expect(MMIOWindowRule.ovmfTrustsPhysBits(41, intel: true))
        // Untrusted: the fixed 32 GiB at 32 GiB (RAM ends at 4 GiB + a little).
        let fixed = MMIOWindowRule.ovmfWindow(physBits: 40, trusted: false, firstNonAddress: 4 * Self.gib, requestedWindow: nil)
        #expect(fixed.base == 32 * Self.gib && fixed.size == 32 * Self.gib && !fixed.isDynamic)
        // 40 trusted bits (an AMD model, or -cpu host on such a host): 2^37 = 128 GiB at 896 GiB.
        let dynamic = MMIOWindowRule.ovmfWindow(physBits: 40, trusted: true, firstNonAddress: 4 * Self.gib, requestedWindow: nil)
        #expect(dynamic.base == 896 * Self.gib && dynamic.size == 128 * Self.gib && dynamic.isDynamic)
        // X-PciMmio64Mb at least as large as the dynamic window keeps the fixed rule: 257 GiB
        // based at 256 GiB (the largest power of two in 257 GiB).
        let asked = MMIOWindowRule.ovmfWindow(physBits: 40, trusted: true, firstNonAddress: 4 * Self.gib, requestedWindow: 257 * Self.gib)
        #expect(asked.base == 256 * Self.gib && asked.size == 257 * Self.gib && !asked.isDynamic)
        // 52 bits are capped at 47: 2^44 = 16 TiB at 2^47 - 2^44.
        let capped = MMIOWindowRule.ovmfWindow(physBits: 52, trusted: true, firstNonAddress: 4 * Self.gib, requestedWindow: nil)
        #expect(capped.size == 16 * Self.tib && capped.base == 112 * Self.tib)
    }

    @Test func noBARsNeedNothing() {
        let plan = MMIOWindowRule.plan(MMIOWindowRequest(barSizes: [], guestMemory: 8 * Self.gib, hostPhysicalAddressBits: nil))
        #expect(plan.isEmpty)
        #expect(plan.span == 0)
        #expect(plan.guestAddressBits == 0)
        #expect(plan.verdicts.allSatisfy { $0.fitsByDefault })
        #expect(plan.qemuArguments.isEmpty)
        #expect(plan.hostHolds == nil)
    }

    @Test func absurdSizesDoNotOverflow() {
        let huge = MMIOWindowRule.plan(MMIOWindowRequest(barSizes: [.max, 1 << 63, 1 << 63], guestMemory: .max, hostPhysicalAddressBits: 52))
        #expect(huge.span == nil)
        #expect(huge.window == nil)
        #expect(huge.windowMiB == nil)
        #expect(huge.guestAddressBits == 65)
        #expect(huge.someGuestHolds == false)
        #expect(huge.qemuArguments.isEmpty)
        // Two 2^63 BARs are each representable, their sum is not.
        let sum = MMIOWindowRule.plan(MMIOWindowRequest(barSizes: [1 << 63, 1 << 63], guestMemory: 1 << 30, hostPhysicalAddressBits: 52))
        #expect(sum.span == nil)
        #expect(sum.verdicts.allSatisfy { !$0.fitsByDefault })
        // A window past OVMF's 16 TiB limit has no X-PciMmio64Mb.
        let past = MMIOWindowRule.plan(MMIOWindowRequest(barSizes: [16 * Self.tib], guestMemory: 1 << 30, hostPhysicalAddressBits: 52))
        #expect(past.window == 16 * Self.tib + Self.gib)
        #expect(past.windowMiB == nil)
        #expect(past.qemuArguments.isEmpty)
    }

    @Test func aSizeThatIsNotAPowerOfTwoCountsAsTheNextOne() {
        let plan = MMIOWindowRule.plan(MMIOWindowRequest(barSizes: [3 * Self.gib, 1], guestMemory: 1 << 30, hostPhysicalAddressBits: nil))
        #expect(plan.placedBARs == [4 * Self.gib, 1])
    }

    /// The span is where a first-fit placement of naturally aligned BARs, largest first, from an
    /// address aligned to the largest, ends: checked against that placement on every multiset of
    /// sizes 4 KiB-1 TiB up to four BARs drawn from a spread of exponents.
    @Test func spanEqualsFirstFitPlacement() {
        let exponents = [12, 13, 20, 21, 28, 30, 33, 35, 39, 40]
        func check(_ sizes: [UInt64]) {
            let plan = MMIOWindowRule.plan(MMIOWindowRequest(barSizes: sizes, guestMemory: 1 << 30, hostPhysicalAddressBits: nil))
            let sorted = sizes.sorted(by: >)
            var cursor: UInt64 = 0
            for size in sorted {
                cursor = (cursor + size - 1) / size * size   // natural alignment
                cursor += size
            }
            #expect(plan.span == cursor, "sizes \(sizes)")
        }
        for a in exponents { for b in exponents where b <= a { for c in exponents where c <= b { for d in exponents where d <= c {
            check([1 << UInt64(d), 1 << UInt64(a), 1 << UInt64(c), 1 << UInt64(b)])
        } } } }
    }

    @Test func arithmeticHelpers() {
        #expect(MMIOWindowRule.bitsToCover(1 << 36) == 36)
        #expect(MMIOWindowRule.bitsToCover((1 << 36) + 1) == 37)
        #expect(MMIOWindowRule.bitsToCover(nil) == 65)
        #expect(MMIOWindowRule.powerOfTwoCeiling(0) == 1)
        #expect(MMIOWindowRule.powerOfTwoCeiling((1 << 63) + 1) == nil)
        #expect(MMIOWindowRule.powerOfTwoCeiling(1 << 63) == 1 << 63)
        #expect(MMIOWindowRule.alignUp(.max, 1 << 30) == nil)
        #expect(MMIOWindowRule.firstNonAddress(guestMemory: 2 * Self.gib) == 4 * Self.gib)
        #expect(MMIOWindowRule.firstNonAddress(guestMemory: 16 * Self.gib) == 18 * Self.gib)
    }
}
