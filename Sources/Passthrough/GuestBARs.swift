import PageAlignment
import TextFormat

/// One BAR (or the expansion ROM) as the guest sees it: its kind and size from the device, and
/// the address the guest wrote. The register protocol is the PCI spec's: the low bits are
/// read-only flags, the address bits below the size read as zero, so writing all-ones and
/// reading back gives the size mask (BAR sizing).
public struct GuestBAR: Sendable, Equatable {
    /// What the BAR decodes.
    public enum Kind: Sendable, Equatable {
        /// I/O ports.
        case io
        /// Memory below 4 GiB (one register).
        case memory32
        /// Memory anywhere (this register and the next one, the high dword).
        case memory64
        /// The expansion ROM (register 0x30), decoded while its enable bit is set.
        case rom
    }

    /// The BAR number: 0-5, or `GuestBAR.romIndex` for the expansion ROM.
    public let index: Int
    /// What it decodes.
    public let kind: Kind
    /// The prefetchable bit (memory BARs), kept as the device has it.
    public let isPrefetchable: Bool
    /// Its size: a power of two.
    public let size: UInt64
    /// The guest's address for it (only the bits above the size; zero until the guest writes).
    public internal(set) var address: UInt64 = 0
    /// The ROM's enable bit (always false for BARs).
    public internal(set) var romEnabled = false
    /// The register's read-only low bits (I/O: bit 0; memory: type and prefetchable bits).
    let flags: UInt32

    /// The number the expansion ROM goes by among the BARs (VFIO's ROM region index).
    public static let romIndex = 6

    /// A BAR of `kind` and `size` (a power of two, at least 4 bytes for I/O, 16 for memory, 2 KiB
    /// for the ROM), or nil when the size cannot be one.
    public init?(index: Int, kind: Kind, size: UInt64, isPrefetchable: Bool = false) {
        let minimum: UInt64 = switch kind { case .io: 4; case .memory32, .memory64: 16; case .rom: 2048 }
        guard AddressAlignment.isPowerOfTwo(size), size >= minimum else { return nil }
        if kind == .io || kind == .memory32 || kind == .rom, size > 1 << 32 { return nil }
        self.index = index
        self.kind = kind
        self.size = size
        self.isPrefetchable = isPrefetchable && (kind == .memory32 || kind == .memory64)
        switch kind {
        case .io: flags = 1
        case .memory32: flags = self.isPrefetchable ? 0x8 : 0
        case .memory64: flags = 0x4 | (self.isPrefetchable ? 0x8 : 0)
        case .rom: flags = 0
        }
    }

    /// The address bits the register keeps (the rest read as zero or as flags).
    var addressMask: UInt64 {
        let sizeMask = ~(size &- 1)
        switch kind {
        case .io: return sizeMask & 0xffff_fffc
        case .memory32: return sizeMask & 0xffff_fff0
        case .memory64: return sizeMask & ~UInt64(0xf)
        case .rom: return sizeMask & 0xffff_f800
        }
    }

    /// Whether it decodes memory (as opposed to I/O ports).
    public var isMemory: Bool { kind != .io }

    /// The register's value: the low dword, or for a 64-bit BAR's next register the high one.
    public func register(upper: Bool) -> UInt32 {
        if upper { return UInt32(truncatingIfNeeded: address >> 32) }
        return UInt32(truncatingIfNeeded: address) | flags | (romEnabled ? 1 : 0)
    }

    /// A guest write to the register (low dword, or a 64-bit BAR's high dword): the address bits
    /// above the size are kept, everything else is dropped, as hardware does.
    public mutating func write(_ value: UInt32, upper: Bool) {
        if upper {
            guard kind == .memory64 else { return }
            address = (address & 0xffff_ffff) | (UInt64(value) << 32 & addressMask)
        } else {
            let high = kind == .memory64 ? address & 0xffff_ffff_0000_0000 : 0
            address = high | (UInt64(value) & addressMask & 0xffff_ffff)
            if kind == .rom { romEnabled = value & 1 != 0 }
        }
    }
}

/// Where the guest may put a BAR so that the VMM maps it: the rules a guest's BAR address is
/// checked against before the BAR's memslots are added there. An address that breaks them is
/// what hardware would decode too (the register keeps it), but the VMM maps nothing there and
/// logs why, so nothing of the device ever lands on guest RAM or outside the address width.
public struct GuestBARRules: Sendable, Equatable {
    /// Guest-physical ranges no BAR may overlap: RAM, the APIC and IOAPIC pages, the VMM's own MMIO.
    public var reservedMemory: [Range<UInt64>]
    /// Guest physical address bits: a BAR must end at or below 2^bits.
    public var addressBits: Int
    /// I/O port ranges no I/O BAR may overlap (the serial port, the PCI config ports...).
    public var reservedPorts: [Range<UInt64>]

    /// Rules with these reservations.
    public init(reservedMemory: [Range<UInt64>], addressBits: Int = 40, reservedPorts: [Range<UInt64>] = [0..<0x1000]) {
        self.reservedMemory = reservedMemory
        self.addressBits = max(12, min(addressBits, 64))
        self.reservedPorts = reservedPorts
    }

    /// Why the VMM must not map `bar` at its address next to `others` (the ranges the
    /// device's other BARs hold in the same space), or nil when it may.
    public func problem(with bar: GuestBAR, others: [Range<UInt64>]) -> String? {
        let start = bar.address
        guard start != 0 else { return "address 0 is not an assignment" }
        guard AddressAlignment.isAligned(start, to: bar.size) else { return "not aligned to its size \(bar.size.hex())" }
        let (end, overflow) = start.addingReportingOverflow(bar.size)
        guard !overflow else { return "wraps past the end of the address space" }
        let range = start..<end
        if bar.isMemory {
            guard addressBits >= 64 || end <= UInt64(1) << UInt64(addressBits) else {
                return "ends beyond the guest's \(addressBits)-bit physical address space"
            }
            if let clash = reservedMemory.first(where: { $0.overlaps(range) }) {
                return "overlaps reserved guest memory \(clash.lowerBound.hex())-\(clash.upperBound.hex())"
            }
        } else {
            guard end <= 0x1_0000 else { return "ends beyond the 64 KiB I/O port space" }
            if let clash = reservedPorts.first(where: { $0.overlaps(range) }) {
                return "overlaps reserved I/O ports \(clash.lowerBound.hex())-\(clash.upperBound.hex())"
            }
        }
        if let clash = others.first(where: { $0.overlaps(range) }) {
            return "overlaps another BAR of the device at \(clash.lowerBound.hex())-\(clash.upperBound.hex())"
        }
        return nil
    }
}
