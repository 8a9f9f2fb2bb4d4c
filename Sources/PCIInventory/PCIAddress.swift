import TextFormat
/// A PCI function's address: domain, bus, device, function.
///
/// Parses `DDDD:BB:DD.F` and the short `BB:DD.F` (domain 0000), in any case; prints the
/// canonical lower-case form the kernel uses in sysfs, `0000:01:00.0`.
public struct PCIAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The PCI domain (segment).
    public let domain: UInt32
    /// The bus number.
    public let bus: UInt8
    /// The device (slot) number, 0-0x1f.
    public let device: UInt8
    /// The function number, 0-7.
    public let function: UInt8

    /// An address from its parts; throws when the device or function is out of range.
    public init(domain: UInt32 = 0, bus: UInt8, device: UInt8, function: UInt8) throws(PCIAddressError) {
        guard device <= 0x1f else {
            throw PCIAddressError(input: Self.format(domain, bus, device, function),
                                  problem: "device \(hex2(device)) is out of range 00-1f")
        }
        guard function <= 7 else {
            throw PCIAddressError(input: Self.format(domain, bus, device, function),
                                  problem: "function \(function) is out of range 0-7")
        }
        self.domain = domain
        self.bus = bus
        self.device = device
        self.function = function
    }

    /// Parses the canonical form sysfs uses for names and links ("0000:3b:00.1", exactly 12
    /// bytes, lower-case); nil for anything else. The scan meets thousands of these, and this
    /// skips the general parser's trimming and splitting.
    init?<Bytes: Collection>(canonical bytes: Bytes) where Bytes.Element == UInt8 {
        guard bytes.count == 12 else { return nil }
        var values: [UInt64] = [0, 0, 0, 0]
        var field = 0
        for (position, byte) in bytes.enumerated() {
            switch position {
            case 4, 7:
                guard byte == UInt8(ascii: ":") else { return nil }
                field += 1
            case 10:
                guard byte == UInt8(ascii: ".") else { return nil }
                field += 1
            default:
                guard let digit = hexDigitValue(byte) else { return nil }
                values[field] = values[field] << 4 | UInt64(digit)
            }
        }
        guard values[2] <= 0x1f, values[3] <= 7 else { return nil }
        domain = UInt32(values[0])
        bus = UInt8(values[1])
        device = UInt8(values[2])
        function = UInt8(values[3])
    }

    /// Parses a user- or kernel-supplied address. Throws an error that names the expected form.
    public init(parsing text: String) throws(PCIAddressError) {
        let input = text.trimmingWhitespace()
        let colonParts = input.split(separator: ":", omittingEmptySubsequences: false)
        let domainText: Substring
        let busText: Substring
        let slotText: Substring
        switch colonParts.count {
        case 3:
            domainText = colonParts[0]
            busText = colonParts[1]
            slotText = colonParts[2]
        case 2:
            domainText = "0000"
            busText = colonParts[0]
            slotText = colonParts[1]
        default:
            throw PCIAddressError(input: input, problem: "it is not of the form DDDD:BB:DD.F or BB:DD.F")
        }
        let slotParts = slotText.split(separator: ".", omittingEmptySubsequences: false)
        guard slotParts.count == 2 else {
            throw PCIAddressError(input: input, problem: "the device and function must be written DD.F")
        }
        // Domains above ffff exist (Intel VMD uses 10000+), so up to 8 digits are accepted.
        guard let domain = parseHex(domainText, maxDigits: 8).map(UInt32.init) else {
            throw PCIAddressError(input: input, problem: "the domain \"\(domainText)\" is not 1-8 hex digits")
        }
        guard let bus = parseHex(busText, maxDigits: 2).map(UInt8.init) else {
            throw PCIAddressError(input: input, problem: "the bus \"\(busText)\" is not 1-2 hex digits")
        }
        guard let device = parseHex(slotParts[0], maxDigits: 2).map(UInt8.init) else {
            throw PCIAddressError(input: input, problem: "the device \"\(slotParts[0])\" is not 1-2 hex digits")
        }
        guard let function = parseHex(slotParts[1], maxDigits: 1).map(UInt8.init) else {
            throw PCIAddressError(input: input, problem: "the function \"\(slotParts[1])\" is not a digit 0-7")
        }
        guard device <= 0x1f else {
            throw PCIAddressError(input: input, problem: "device \(hex2(device)) is out of range 00-1f")
        }
        guard function <= 7 else {
            throw PCIAddressError(input: input, problem: "function \(function) is out of range 0-7")
        }
        self.domain = domain
        self.bus = bus
        self.device = device
        self.function = function
    }

    /// Canonical form, e.g. `0000:01:00.0`.
    public var description: String { Self.format(domain, bus, device, function) }

    /// The address of function 0 of the same slot; a multi-function device's functions share it.
    public var slot: (domain: UInt32, bus: UInt8, device: UInt8) { (domain, bus, device) }

    /// Ordered by domain, bus, device, function (sysfs order).
    public static func < (lhs: PCIAddress, rhs: PCIAddress) -> Bool {
        (lhs.domain, lhs.bus, lhs.device, lhs.function) < (rhs.domain, rhs.bus, rhs.device, rhs.function)
    }

    static func format(_ domain: UInt32, _ bus: UInt8, _ device: UInt8, _ function: UInt8) -> String {
        // Written byte by byte: `list` and `groups` format thousands of addresses, and
        // interpolation cost more than the sysfs reads of a device. A domain above ffff (VMD)
        // takes up to 8 digits.
        guard domain <= 0xffff, function <= 7 else {
            return "\(domain.hexDigits(4)):\(hex2(bus)):\(hex2(device)).\(function)"
        }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 12) { buffer -> String in
            func digit(_ value: UInt8) -> UInt8 { value < 10 ? 0x30 + value : 0x57 + value }
            for index in 0..<4 { buffer[index] = digit(UInt8(truncatingIfNeeded: (domain >> UInt32(12 - 4 * index)) & 0xf)) }
            buffer[4] = UInt8(ascii: ":")
            buffer[5] = digit(bus >> 4)
            buffer[6] = digit(bus & 0xf)
            buffer[7] = UInt8(ascii: ":")
            buffer[8] = digit(device >> 4)
            buffer[9] = digit(device & 0xf)
            buffer[10] = UInt8(ascii: ".")
            buffer[11] = 0x30 + function
            return String(decoding: UnsafeBufferPointer(buffer), as: UTF8.self)
        }
    }
}

/// A PCI address that could not be parsed. Its description names the expected form.
public struct PCIAddressError: Error, Equatable, CustomStringConvertible {
    /// The text that failed to parse.
    public let input: String
    /// What is wrong with it.
    public let problem: String
    /// The problem and the expected form.
    public var description: String {
        "invalid PCI address \"\(input)\": \(problem); expected DDDD:BB:DD.F or BB:DD.F in hex, e.g. 0000:01:00.0"
    }
}

/// Parses 1...maxDigits hex digits, nothing else (no sign, no 0x).
func parseHex(_ text: Substring, maxDigits: Int) -> UInt64? {
    guard !text.isEmpty, text.count <= maxDigits else { return nil }
    var value: UInt64 = 0
    for byte in text.utf8 {
        guard let digit = hexDigitValue(byte) else { return nil }
        value = value << 4 | UInt64(digit)
    }
    return value
}

@inline(__always)
func hexDigitValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return nil
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        return String(String.UnicodeScalarView(scalars[first...last]))
    }
}
