import ArgumentParser
import BARPlacement
import PCIInventory
import TextFormat
import VFIO

// Command-line values, each parsed once by ArgumentParser: a value that does not parse ends the
// command with ArgumentParser's error and the argument's help (exit 64), before anything is read.

extension PCIAddress: ExpressibleByArgument {
    public init?(argument: String) {
        guard let address = try? PCIAddress(parsing: argument) else { return nil }
        self = address
    }
}

/// The device argument of the commands that open one device.
struct DeviceArgument: ParsableArguments {
    @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address"))
    var address: PCIAddress
}

extension AccessWidth: ExpressibleByArgument {
    public init?(argument: String) {
        guard let bytes = Int(argument) else { return nil }
        self.init(rawValue: bytes)
    }
    public static var allValueStrings: [String] { ["1", "2", "4", "8"] }
}

/// A BAR index, 0-5.
struct BARIndex: ExpressibleByArgument, CustomStringConvertible, Equatable {
    let value: Int
    init?(argument: String) {
        guard let value = Int(argument), (0..<PCIRegion.barCount).contains(value) else { return nil }
        self.value = value
    }
    static var allValueStrings: [String] { (0..<PCIRegion.barCount).map(String.init) }
    /// VFIO's region index of the BAR.
    var region: UInt32 { PCIRegion.bar(value) }
    var description: String { String(value) }
}

/// The most any byte-count option may ask for: the x86-64 user address space (128 TiB). Skews
/// and sizes beyond it can never be mapped, and bounding them here keeps every sum of a value,
/// a placement and a BAR inside 64 bits.
let largestByteCountOption: UInt64 = 1 << 47

/// A number written in decimal or with a 0x prefix in hex: a register value.
struct Number: ExpressibleByArgument, Equatable {
    let value: UInt64
    init?(argument: String) {
        let lower = argument.lowercased()
        let parsed = lower.hasPrefix("0x") ? UInt64(lower.dropFirst(2), radix: 16) : UInt64(lower, radix: 10)
        guard let parsed else { return nil }
        value = parsed
    }
    init(_ value: UInt64) { self.value = value }
    var defaultValueDescription: String { String(value) }
}

/// A byte offset, decimal or 0x hex, within the 128 TiB user address space (also the lab probe's).
package struct ByteOffset: ExpressibleByArgument, Equatable {
    package let value: UInt64
    package init?(argument: String) {
        guard let number = Number(argument: argument), number.value <= largestByteCountOption else { return nil }
        value = number.value
    }
    package init(_ value: UInt64) { self.value = value }
    package var defaultValueDescription: String { String(value) }
}

/// Bytes, decimal or 0x hex, optionally with a K, M or G (binary) suffix: 4096, 0x1000, 4K, 2M;
/// within the 128 TiB user address space.
struct ByteCount: ExpressibleByArgument, Equatable {
    let value: UInt64
    init?(argument: String) {
        guard let value = ByteCount.parse(argument), value <= largestByteCountOption else { return nil }
        self.value = value
    }
    init(_ value: UInt64) { self.value = value }
    var defaultValueDescription: String { String(value) }

    /// The byte-count syntax alone, with no bound (nil on overflow).
    static func parse(_ text: String) -> UInt64? {
        var body = text.lowercased()
        var multiplier: UInt64 = 1
        if let last = body.last, !body.hasPrefix("0x") || !last.isHexDigit {
            switch last {
            case "k": multiplier = 1 << 10
            case "m": multiplier = 1 << 20
            case "g": multiplier = 1 << 30
            default: break
            }
            if multiplier > 1 { body.removeLast() }
        }
        let value: UInt64?
        if body.hasPrefix("0x") { value = UInt64(body.dropFirst(2), radix: 16) } else { value = UInt64(body, radix: 10) }
        guard let value else { return nil }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }
}

/// A byte count that is a whole number of 4 KiB pages (0 allowed): skews and window offsets.
struct PageMultiple: ExpressibleByArgument, Equatable {
    let value: UInt64
    init?(argument: String) {
        guard let count = ByteCount(argument: argument), count.value % PageGeometry.pageSize == 0 else { return nil }
        value = count.value
    }
    private init(zero: Void) { value = 0 }
    static let zero = PageMultiple(zero: ())
    var defaultValueDescription: String { String(value) }
}

/// A length of at least one 4 KiB page, in whole pages.
struct PageLength: ExpressibleByArgument, Equatable {
    let value: UInt64
    init?(argument: String) {
        guard let count = PageMultiple(argument: argument), count.value > 0 else { return nil }
        value = count.value
    }
    init(_ value: UInt64) { self.value = value }
    var defaultValueDescription: String { byteCountSuffixed(value) }
}

/// The order of page reads in `bar touch`.
enum PatternName: String, ExpressibleByArgument, CaseIterable {
    case linear, reverse, random

    func pattern(seed: UInt64) -> AccessPattern {
        switch self {
        case .linear: .linear
        case .reverse: .reverse
        case .random: .random(seed: seed)
        }
    }
}

/// A whole number of 2 MiB pages, at least one: buffers backed by huge pages.
struct HugePageMultiple: ExpressibleByArgument, Equatable {
    let value: UInt64
    init?(argument: String) {
        guard let count = ByteCount(argument: argument), count.value > 0, count.value % (2 << 20) == 0 else { return nil }
        value = count.value
    }
    init(_ value: UInt64) { self.value = value }
    var defaultValueDescription: String { byteCountSuffixed(value) }
}

/// A memory size with a K, M, G or T suffix (a trailing B or iB allowed): 8G, 512MiB; above 0.
struct MemorySize: ExpressibleByArgument, Equatable {
    let bytes: UInt64
    init?(argument: String) {
        guard let bytes = MemorySize.parse(argument) else { return nil }
        self.bytes = bytes
    }
    init(_ bytes: UInt64) { self.bytes = bytes }
    var defaultValueDescription: String { byteCountSuffixed(bytes) }

    static func parse(_ text: String) -> UInt64? {
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var digits = text.uppercased()
        if digits.hasSuffix("IB") { digits.removeLast(2) } else if digits.hasSuffix("B") { digits.removeLast() }
        var multiplier: UInt64 = 1
        if let last = digits.last, let unit = units[last] { multiplier = unit; digits.removeLast() }
        guard let value = UInt64(digits), value > 0 else { return nil }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }
}

/// A VFIO IRQ index by name.
enum IRQIndexName: String, ExpressibleByArgument, CaseIterable {
    case intx, msi, msix
    var index: UInt32 {
        switch self {
        case .intx: PCIIRQ.intx
        case .msi: PCIIRQ.msi
        case .msix: PCIIRQ.msix
        }
    }
}

/// A timeout in milliseconds, above 0 (poll(2) takes an Int32).
struct Milliseconds: ExpressibleByArgument, Equatable {
    let value: Int32
    init?(argument: String) {
        guard let value = Int32(argument), value > 0 else { return nil }
        self.value = value
    }
    init(_ value: Int32) { self.value = value }
    var defaultValueDescription: String { String(value) }
}

/// An integer option within a range its type names: parsed once, refused outside the range.
protocol BoundedInteger: ExpressibleByArgument {
    static var range: ClosedRange<Int> { get }
    var value: Int { get }
    /// A value the code chose (a default), inside `range`.
    init(_ value: Int)
}

extension BoundedInteger {
    init?(argument: String) {
        guard let value = Int(argument), Self.range.contains(value) else { return nil }
        self.init(value)
    }
    var defaultValueDescription: String { String(value) }
}

/// A count of at least 1.
struct PositiveCount: BoundedInteger {
    static let range = 1...Int.max
    let value: Int
    init(_ value: Int) { self.value = value }
}

/// Repetitions of a timed run: 1 to 1000.
struct Repetitions: BoundedInteger {
    static let range = 1...1000
    let value: Int
    init(_ value: Int) { self.value = value }
}

/// A count of 0 or more.
struct NonNegativeCount: BoundedInteger {
    static let range = 0...Int.max
    let value: Int
    init(_ value: Int) { self.value = value }
}

/// Devices passed to one VM: 1 to 4096.
struct VMDeviceCount: BoundedInteger {
    static let range = 1...4096
    let value: Int
    init(_ value: Int) { self.value = value }
}
