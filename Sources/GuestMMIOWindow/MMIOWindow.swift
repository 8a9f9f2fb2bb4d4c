import TextFormat

/// What a guest's 64-bit PCI MMIO window must hold: the 64-bit prefetchable BARs of the devices a
/// VM gets (sizes after any Resizable BAR change), its RAM, and the host's physical address bits.
public struct MMIOWindowRequest: Sendable, Equatable {
    /// Bytes of each 64-bit prefetchable BAR. A size that is not a power of two (a BAR never is
    /// one, but sysfs is external input) counts as the next power of two.
    public var barSizes: [UInt64]
    /// The guest's RAM in bytes (on q35 the part above 2 GiB sits above 4 GiB and pushes the
    /// window up).
    public var guestMemory: UInt64
    /// The host CPU's physical address bits (/proc/cpuinfo "address sizes"); nil: unknown.
    public var hostPhysicalAddressBits: Int?

    /// A request for these BARs, this much guest RAM and this host.
    public init(barSizes: [UInt64], guestMemory: UInt64, hostPhysicalAddressBits: Int?) {
        self.barSizes = barSizes
        self.guestMemory = guestMemory
        self.hostPhysicalAddressBits = hostPhysicalAddressBits
    }
}

/// The guest firmwares in Debian's archive whose 64-bit window rule vfioctl models, each named
/// with the source file and function the rule is taken from. Checked against the Debian source
/// packages themselves: `edk2` 2022.11-6+deb12u2 (the `ovmf` package of bookworm) and `seabios`
/// 1.16.2-1. OVMF 2022.11 already has both of its window rules; which one a guest gets depends on
/// whether OVMF trusts the physical address bits the guest CPU reports.
public enum GuestFirmware: String, Sendable, CaseIterable {
    /// OVMF 2022.11 when it does not trust the CPU's address bits (QEMU's default 40 bits on an
    /// Intel CPU model): the fixed window, 32 GiB unless `opt/ovmf/X-PciMmio64Mb` says otherwise.
    case ovmfClassic = "ovmf-2022.11-fixed"
    /// OVMF 2022.11 when it trusts the CPU's address bits (`-cpu host`, whose address bits QEMU
    /// takes from the host under KVM): 1/8 of the guest's address space, at its top.
    case ovmfDynamic = "ovmf-2022.11-dynamic"
    /// SeaBIOS 1.16.2 (Debian bookworm's `seabios`, QEMU's default BIOS): a window sized to the BARs.
    case seaBIOS = "seabios-1.16.2"

    /// The firmware as people know it.
    public var name: String {
        switch self {
        case .ovmfClassic: "OVMF 2022.11 (Debian bookworm's ovmf) with an Intel CPU model's default 40 address bits"
        case .ovmfDynamic: "OVMF 2022.11 (Debian bookworm's ovmf) with -cpu host"
        case .seaBIOS: "SeaBIOS 1.16.2 (Debian bookworm's seabios)"
        }
    }

    /// Where the rule comes from in the firmware's source.
    public var source: String {
        switch self {
        case .ovmfClassic:
            "edk2 2022.11 OvmfPkg/Library/PlatformInitLib/MemDetect.c PlatformGetFirstNonAddress (X-PciMmio64Mb, base aligned to 1 GiB and to the window's size), PlatformAddressWidthFromCpuid (40 bits not trusted on GenuineIntel); PcdPciMmio64Size 0x800000000 in OvmfPkg/OvmfPkgX64.dsc"
        case .ovmfDynamic:
            "edk2 2022.11 OvmfPkg/Library/PlatformInitLib/MemDetect.c PlatformAddressWidthFromCpuid (trusted: 41 bits or more, 36/39 on GenuineIntel, 40 on AuthenticAMD; capped at 47), PlatformDynamicMmioWindow (2^(bits-3) at 2^bits - 2^(bits-3) when larger than the fixed window)"
        case .seaBIOS:
            "SeaBIOS 1.16.2 src/fw/pciinit.c pci_bios_map_devices (64-bit BARs move above 4 GiB only when the 32-bit window is full; base max(4 GiB + RAM above 4 GiB, etc/reserved-memory-end), aligned to the largest BAR and 1 GiB; no check against the CPU's address bits)"
        }
    }
}

/// What one firmware gives the BARs with no settings from vfioctl.
public struct FirmwareWindowVerdict: Sendable, Equatable {
    /// The firmware judged.
    public let firmware: GuestFirmware
    /// Whether every BAR gets an address with the firmware's defaults and QEMU's default CPU
    /// (phys-bits=40).
    public let fitsByDefault: Bool
    /// The default window and how it compares with the need, in words.
    public let explanation: String
}

/// The answer: the window the BARs need, what each firmware gives, and the settings that make it
/// fit. Made by `MMIOWindowRule.plan`; pure.
public struct MMIOWindowPlan: Sendable, Equatable {
    /// The request planned.
    public let request: MMIOWindowRequest
    /// The BARs as the firmware places them: powers of two, largest first.
    public let placedBARs: [UInt64]
    /// Bytes the BARs span, each naturally aligned and largest first (no gaps between them);
    /// nil past 2^64.
    public let span: UInt64?
    /// The window to ask OVMF for (`X-PciMmio64Mb`, in bytes): the span in whole GiB plus 1 GiB
    /// for the VMM's own 64-bit BARs (virtio's among them); nil past 2^64.
    public let window: UInt64?
    /// Where OVMF's classic rule places that window in this guest, and its exclusive end.
    public let windowBase: UInt64?
    /// The exclusive end of that window; nil past 2^64.
    public let windowEnd: UInt64?
    /// The physical address bits the guest CPU must report so the window's end is addressable
    /// (0 with no BARs; 65 means past 2^64).
    public let guestAddressBits: Int
    /// The same with the least RAM a guest can have: when even this is more than the host has,
    /// no guest on this host can hold the BARs.
    public let minimumGuestAddressBits: Int
    /// Each firmware's default against the need.
    public let verdicts: [FirmwareWindowVerdict]

    /// No BARs to place: nothing to check.
    public var isEmpty: Bool { placedBARs.isEmpty }
    /// Some firmware's default leaves a BAR without an address.
    public var needsSettings: Bool { verdicts.contains { !$0.fitsByDefault } }
    /// The guest needs more address bits than QEMU's default CPU reports.
    public var needsAddressBits: Bool { guestAddressBits > MMIOWindowRule.qemuDefaultPhysBits }
    /// Whether the host's CPU can give the guest the bits it needs; nil when the host's bits are
    /// unknown. A guest's phys-bits above the host's breaks its memory accesses, so the host's
    /// bits are a hard limit.
    public var hostHolds: Bool? {
        request.hostPhysicalAddressBits.map { guestAddressBits <= $0 }
    }
    /// Whether some guest (with less RAM) could hold the BARs on this host.
    public var someGuestHolds: Bool? {
        request.hostPhysicalAddressBits.map { minimumGuestAddressBits <= $0 }
    }
    /// `X-PciMmio64Mb`'s value: the window in MiB; nil when it is past what OVMF accepts (16 TiB).
    public var windowMiB: UInt64? {
        guard let window, window >> 20 <= MMIOWindowRule.ovmfMaximumWindowMiB else { return nil }
        return window >> 20
    }

    /// QEMU's options: the fw_cfg knob both OVMF versions read, and the CPU's address bits when
    /// the default 40 are too few (as `-cpu host,phys-bits=N`: QEMU takes the last -cpu, and host
    /// is the model for passthrough; with another model, add phys-bits=N to it).
    public var qemuArguments: [String] {
        guard needsSettings || needsAddressBits, let mib = windowMiB else { return [] }
        var arguments = ["-fw_cfg", "name=opt/ovmf/X-PciMmio64Mb,string=\(mib)"]
        if needsAddressBits { arguments += ["-cpu", "host,phys-bits=\(guestAddressBits)"] }
        return arguments
    }

    /// libvirt's elements for the same: `<sysinfo type='fwcfg'>` (libvirt 6.5) and
    /// `<maxphysaddr>` in `<cpu>` (libvirt 8.7).
    public var libvirtElements: String {
        guard needsSettings || needsAddressBits, let mib = windowMiB else { return "" }
        var lines = ["<sysinfo type='fwcfg'>",
                     "  <entry name='opt/ovmf/X-PciMmio64Mb'>\(mib)</entry>",
                     "</sysinfo>"]
        if needsAddressBits {
            lines += ["<cpu mode='host-passthrough'>", "  <maxphysaddr mode='emulate' bits='\(guestAddressBits)'/>", "</cpu>"]
        }
        return lines.joined(separator: "\n")
    }

    /// Cloud Hypervisor has no window knob: its 64-bit window runs from the end of RAM to the top
    /// of the guest's address space (vmm/src/memory_manager.rs), whose bits `max_phys_bits`
    /// (default 46) caps below the host's: it needs raising only past 46 bits.
    public var cloudHypervisorArguments: [String] {
        guard guestAddressBits > MMIOWindowRule.cloudHypervisorDefaultPhysBits else { return [] }
        return ["--cpus", "max_phys_bits=\(guestAddressBits)"]
    }
}

/// The rule: pure and overflow-safe, from BAR sizes and host facts to `MMIOWindowPlan`.
public enum MMIOWindowRule {
    /// QEMU's default guest physical address bits for named CPU models (target/i386/cpu.h
    /// TCG_PHYS_ADDR_BITS / the phys-bits property default).
    public static let qemuDefaultPhysBits = 40
    /// OVMF 2022.11 limits the address width it uses to 47 bits (PlatformAddressWidthFromCpuid:
    /// "Avoid 5-level paging altogether for now ... So the actual limit is 47").
    public static let ovmfMaximumPhysBits = 47
    /// Cloud Hypervisor's default `max_phys_bits`: past it the guest needs the option.
    public static let cloudHypervisorDefaultPhysBits = 46
    /// OVMF's default 64-bit window: PcdPciMmio64Size 0x800000000 (OvmfPkgX64.dsc).
    public static let ovmfDefaultWindow: UInt64 = 32 << 30
    /// The largest `X-PciMmio64Mb` OVMF accepts (0x1000000 MiB, 16 TiB); a larger value is
    /// ignored as malformed (PlatformGetFirstNonAddress).
    public static let ovmfMaximumWindowMiB: UInt64 = 0x100_0000
    /// Headroom in the recommended window for the VMM's own 64-bit BARs.
    public static let vmmDeviceHeadroom: UInt64 = 1 << 30

    static let gibibyte: UInt64 = 1 << 30
    static let fourGiB: UInt64 = 4 << 30

    /// Plans the window for `request`.
    public static func plan(_ request: MMIOWindowRequest) -> MMIOWindowPlan {
        let placed = request.barSizes.map { powerOfTwoCeiling($0) }.sorted { ($0 ?? .max) > ($1 ?? .max) }
        let bars = placed.compactMap { $0 }
        // A BAR past 2^63 has no power-of-two size in 64 bits: the span is past 2^64.
        let span: UInt64? = placed.contains(nil) ? nil : checkedSum(bars)
        let window = span.flatMap { span in bars.isEmpty ? 0 : alignUp(span, gibibyte).flatMap { add($0, vmmDeviceHeadroom) } }
        let start = firstNonAddress(guestMemory: request.guestMemory)
        let base = window.flatMap { classicBase(firstNonAddress: start, window: $0) }
        let end = base.flatMap { base in window.flatMap { add(base, $0) } }
        let minimumBase = window.flatMap { classicBase(firstNonAddress: fourGiB, window: $0) }
        let minimumEnd = minimumBase.flatMap { base in window.flatMap { add(base, $0) } }
        let guestBits = bars.isEmpty ? 0 : bitsToCover(end)
        let minimumBits = bars.isEmpty ? 0 : bitsToCover(minimumEnd)
        let verdicts = GuestFirmware.allCases.map {
            verdict($0, bars: bars, span: span, firstNonAddress: start, hostBits: request.hostPhysicalAddressBits)
        }
        return MMIOWindowPlan(request: request, placedBARs: bars, span: span, window: window, windowBase: base,
                              windowEnd: end, guestAddressBits: guestBits, minimumGuestAddressBits: minimumBits,
                              verdicts: verdicts)
    }

    /// The first address above the guest's RAM on QEMU's q35 machine (hw/i386/pc_q35.c): with
    /// 2.75 GiB or more, RAM below 4 GiB stops at 2 GiB and the rest starts at 4 GiB.
    static func firstNonAddress(guestMemory: UInt64) -> UInt64 {
        let lowLimit: UInt64 = 0xb000_0000
        let below4G: UInt64 = guestMemory >= lowLimit ? 0x8000_0000 : guestMemory
        return add(fourGiB, guestMemory - below4G) ?? .max
    }

    /// OVMF's classic placement (PlatformGetFirstNonAddress): the base is aligned to 1 GiB, then to
    /// the largest power of two not above the window's size (so the largest BAR that fits is
    /// naturally aligned); the size is rounded up to 1 GiB.
    static func classicBase(firstNonAddress: UInt64, window: UInt64) -> UInt64? {
        guard let size = alignUp(window, gibibyte), size > 0 else { return alignUp(firstNonAddress, gibibyte) }
        return alignUp(firstNonAddress, gibibyte).flatMap { alignUp($0, powerOfTwoFloor(size)) }
    }

    /// OVMF 2022.11's 64-bit window (MemDetect.c): the fixed window (`requestedWindow` from
    /// X-PciMmio64Mb, else 32 GiB; sized up to 1 GiB; based at the first address above RAM aligned
    /// to 1 GiB and to the window's largest power of two), replaced by the dynamic one when the
    /// CPU's address bits are trusted, the dynamic window is larger, and it fits below 2^bits.
    public static func ovmfWindow(physBits: Int, trusted: Bool, firstNonAddress: UInt64,
                                  requestedWindow: UInt64?) -> (base: UInt64, size: UInt64, isDynamic: Bool) {
        let size = alignUp(requestedWindow ?? ovmfDefaultWindow, gibibyte) ?? ovmfDefaultWindow
        let base = classicBase(firstNonAddress: firstNonAddress, window: size) ?? .max
        // PlatformAddressWidthFromCpuid: no 5-level paging, so at most 47 bits; 40 without 1 GiB pages
        // (every CPU model QEMU offers for passthrough has them).
        let bits = min(physBits, ovmfMaximumPhysBits)
        guard trusted, bits >= 4, bits < 64 else { return (base, size, false) }
        let addressSpace = UInt64(1) << UInt64(bits)
        let dynamic = UInt64(1) << UInt64(bits - 3)
        if size < dynamic, let end = add(base, dynamic), end < addressSpace {
            return (addressSpace - dynamic, dynamic, true)
        }
        return (base, size, false)
    }

    /// Whether OVMF 2022.11 trusts the address bits a guest CPU reports (PlatformAddressWidthFromCpuid
    /// with QemuQuirk): 41 or more; 36 or 39 on GenuineIntel; 40 on AuthenticAMD.
    public static func ovmfTrustsPhysBits(_ bits: Int, intel: Bool) -> Bool {
        bits >= 41 || (intel ? bits == 36 || bits == 39 : bits == 40)
    }

    static func verdict(_ firmware: GuestFirmware, bars: [UInt64], span: UInt64?, firstNonAddress: UInt64,
                        hostBits: Int?) -> FirmwareWindowVerdict {
        let need = span.map { byteCount($0) } ?? "more than 2^64 bytes"
        if bars.isEmpty {
            return FirmwareWindowVerdict(firmware: firmware, fitsByDefault: true, explanation: "no 64-bit prefetchable BARs to place")
        }
        switch firmware {
        case .ovmfClassic:
            let fits = span.map { $0 <= ovmfDefaultWindow } ?? false
            let base = classicBase(firstNonAddress: firstNonAddress, window: ovmfDefaultWindow) ?? 0
            let text = "fixed 64-bit window \(byteCount(ovmfDefaultWindow)) at \(base.hex()); the BARs need \(need)"
            return FirmwareWindowVerdict(firmware: firmware, fitsByDefault: fits, explanation: text + (fits ? "" : ": BARs left unassigned"))
        case .ovmfDynamic:
            let bits = hostBits ?? qemuDefaultPhysBits
            let window = ovmfWindow(physBits: bits, trusted: true, firstNonAddress: firstNonAddress, requestedWindow: nil)
            let fits = span.map { $0 <= window.size } ?? false
            let text = "\(window.isDynamic ? "dynamic" : "fixed") 64-bit window \(byteCount(window.size)) at \(window.base.hex()) for \(bits) address bits"
                + (hostBits == nil ? " (the host's are unknown; QEMU's default assumed)" : " (the host's)") + "; the BARs need \(need)"
            return FirmwareWindowVerdict(firmware: firmware, fitsByDefault: fits, explanation: text + (fits ? "" : ": BARs left unassigned"))
        case .seaBIOS:
            // pci_bios_map_devices: base = max(4 GiB + RAM above 4 GiB, etc/reserved-memory-end),
            // aligned to the largest 64-bit BAR and to 1 GiB; window = the BARs, end aligned to 1 GiB.
            let largest = bars.first ?? 0
            let end = alignUp(firstNonAddress, largest).flatMap { alignUp($0, gibibyte) }
                .flatMap { base in span.flatMap { add(base, $0) } }.flatMap { alignUp($0, gibibyte) }
            let bits = bitsToCover(end)
            let fits = bits <= qemuDefaultPhysBits
            return FirmwareWindowVerdict(
                firmware: firmware, fitsByDefault: fits,
                explanation: "window sized to the BARs (\(need)), ending at \(end.map { $0.hex() } ?? "past 2^64"): needs \(bits) address bits, "
                    + (fits ? "within QEMU's default 40" : "more than QEMU's default 40: the guest cannot reach the BARs without phys-bits"))
        }
    }

    // MARK: overflow-safe arithmetic (every size here may come from sysfs)

    static func add(_ a: UInt64, _ b: UInt64) -> UInt64? {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? nil : sum
    }

    static func checkedSum(_ values: [UInt64]) -> UInt64? {
        var total: UInt64 = 0
        for value in values {
            guard let next = add(total, value) else { return nil }
            total = next
        }
        return total
    }

    /// `value` rounded up to a multiple of `alignment` (a power of two; 0 or 1 leaves it).
    static func alignUp(_ value: UInt64, _ alignment: UInt64) -> UInt64? {
        guard alignment > 1 else { return value }
        return add(value, alignment - 1).map { $0 & ~(alignment - 1) }
    }

    /// The smallest power of two at or above `value` (0 counts as 1); nil past 2^63.
    static func powerOfTwoCeiling(_ value: UInt64) -> UInt64? {
        guard value > 1 else { return 1 }
        let shift = UInt64.bitWidth - (value - 1).leadingZeroBitCount
        return shift >= UInt64.bitWidth ? nil : 1 << UInt64(shift)
    }

    /// The largest power of two at or below `value` (> 0).
    static func powerOfTwoFloor(_ value: UInt64) -> UInt64 {
        value == 0 ? 0 : 1 << UInt64(UInt64.bitWidth - 1 - value.leadingZeroBitCount)
    }

    /// Address bits that reach every address below the exclusive `end`: 65 when `end` is past 2^64.
    static func bitsToCover(_ end: UInt64?) -> Int {
        guard let end else { return UInt64.bitWidth + 1 }
        guard end > 1 else { return 0 }
        return UInt64.bitWidth - (end - 1).leadingZeroBitCount
    }
}
