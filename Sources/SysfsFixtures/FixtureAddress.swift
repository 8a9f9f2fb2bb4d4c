import TextFormat
/// A PCI function address as the kernel names it in sysfs: `DDDD:BB:DD.F`.
/// (Named apart from `PCIInventory.PCIAddress` so tests can import both modules; convert via `description`.)
public struct FixtureAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// PCI segment; `0000` on most hosts (VMD domains go beyond 16 bits, hence `UInt32`).
    public var domain: UInt32
    public var bus: UInt8
    /// Device (slot) number, 0...31.
    public var device: UInt8
    /// Function number, 0...7.
    public var function: UInt8

    public init(domain: UInt32 = 0, bus: UInt8, device: UInt8, function: UInt8 = 0) {
        self.domain = domain
        self.bus = bus
        self.device = device & 0x1f
        self.function = function & 0x07
    }

    /// Builds an address from a 16-bit routing ID (`bus << 8 | device << 3 | function`).
    public init(domain: UInt32 = 0, routingID: UInt16) {
        self.init(
            domain: domain,
            bus: UInt8(routingID >> 8),
            device: UInt8((routingID >> 3) & 0x1f),
            function: UInt8(routingID & 0x7)
        )
    }

    /// Parses `DDDD:BB:DD.F` (the sysfs spelling; VMD domains have more digits); returns nil for anything else.
    public init?(_ text: String) {
        let colonParts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard colonParts.count == 3 else { return nil }
        let slotParts = colonParts[2].split(separator: ".", omittingEmptySubsequences: false)
        guard slotParts.count == 2,
              (4...8).contains(colonParts[0].count), colonParts[1].count == 2, slotParts[0].count == 2, slotParts[1].count == 1,
              let domain = UInt32(colonParts[0], radix: 16),
              let bus = UInt8(colonParts[1], radix: 16),
              let device = UInt8(slotParts[0], radix: 16), device < 32,
              let function = UInt8(slotParts[1], radix: 16), function < 8
        else { return nil }
        self.init(domain: domain, bus: bus, device: device, function: function)
    }

    public var routingID: UInt16 {
        UInt16(bus) << 8 | UInt16(device) << 3 | UInt16(function)
    }

    public var description: String {
        domain.hexDigits(4) + ":" + bus.hexDigits(2) + ":" + device.hexDigits(2) + "." + String(function)
    }

    /// The name of the bus this address sits on, as in `pci_bus/0000:01`.
    public var busName: String { domain.hexDigits(4) + ":" + bus.hexDigits(2) }

    public static func < (lhs: FixtureAddress, rhs: FixtureAddress) -> Bool {
        (lhs.domain, lhs.bus, lhs.device, lhs.function) < (rhs.domain, rhs.bus, rhs.device, rhs.function)
    }
}

/// Upper-case, zero-padded hex without a prefix (the kernel's `%0NX`).
func upperHex<T: BinaryInteger>(_ value: T, width: Int) -> String {
    value.hexDigits(width).uppercased()
}
