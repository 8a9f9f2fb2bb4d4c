import TextFormat
/// One BAR (or the expansion ROM) as the kernel reports it in a device's `resource` file.
public struct PCIBAR: Sendable, Equatable {
    /// Memory or I/O port space.
    public enum Kind: String, Sendable { case memory = "mem", io = "io" }

    /// 0-5 for BARs; `PCIBAR.romIndex` for the expansion ROM.
    public let index: Int
    /// The first bus address.
    public let start: UInt64
    /// The last bus address (inclusive, as the kernel prints it).
    public let end: UInt64
    /// Memory or I/O.
    public let kind: Kind
    /// A 64-bit memory BAR (it takes two BAR slots).
    public let is64Bit: Bool
    /// A prefetchable memory BAR.
    public let prefetchable: Bool
    /// The kernel could not place the BAR (IORESOURCE_UNSET): start is not a bus address.
    public let unassigned: Bool

    /// The index `resource` gives the expansion ROM.
    public static let romIndex = 6

    /// Bytes the BAR spans.
    public var size: UInt64 { end &- start &+ 1 }
}

/// The IORESOURCE_* flag bits the kernel prints in `resource` (include/linux/ioport.h). These are
/// kernel-internal, not uapi, so no header exports them to userspace.
enum ResourceFlags {
    static let io: UInt64 = 0x0000_0100
    static let memory: UInt64 = 0x0000_0200
    static let prefetch: UInt64 = 0x0000_2000
    static let memory64: UInt64 = 0x0010_0000
    static let disabled: UInt64 = 0x1000_0000
    static let unset: UInt64 = 0x2000_0000
}

/// What parsing a `resource` file gives: the BARs and ROM in use, and any lines it could not read.
public struct ParsedResources: Sendable, Equatable {
    /// The BARs in use.
    public var bars: [PCIBAR] = []
    /// The expansion ROM, if present.
    public var rom: PCIBAR?
    /// Human-readable descriptions of malformed lines (garbage is reported, never fatal).
    public var problems: [String] = []
}

/// Parses the text of a device's `resource` file: one `start end flags` line per resource,
/// BARs 0-5 first, then the ROM; later lines (SR-IOV and bridge windows) are not BARs.
/// Unused resources (all zero, or no type flag) are left out.
public func parseResourceFile(_ text: String) -> ParsedResources {
    var bytes = Array(text.utf8)
    return parseResourceFile(&bytes, count: bytes.count)
}

/// The same, straight from the file's bytes (the scan's hot path: no Strings unless a line is
/// malformed and must be quoted in a problem).
func parseResourceFile(_ bytes: inout [UInt8], count: Int) -> ParsedResources {
    var result = ParsedResources()
    var lineIndex = 0
    var lineStart = 0
    while lineStart < count, lineIndex <= PCIBAR.romIndex {
        var lineEnd = lineStart
        while lineEnd < count, bytes[lineEnd] != 0x0a { lineEnd += 1 }
        defer { lineIndex += 1; lineStart = lineEnd + 1 }
        // Three hex columns separated by spaces.
        var values: [UInt64] = []
        values.reserveCapacity(3)
        var position = lineStart
        var malformed = false
        while position < lineEnd {
            while position < lineEnd, bytes[position] == 0x20 { position += 1 }
            guard position < lineEnd else { break }
            var columnEnd = position
            while columnEnd < lineEnd, bytes[columnEnd] != 0x20 { columnEnd += 1 }
            var digitsStart = position
            if columnEnd - position > 2, bytes[position] == UInt8(ascii: "0"), bytes[position + 1] | 0x20 == UInt8(ascii: "x") { digitsStart += 2 }
            var value: UInt64 = 0
            if columnEnd - digitsStart == 0 || columnEnd - digitsStart > 16 { malformed = true }
            for index in digitsStart..<columnEnd {
                guard let digit = hexDigitValue(bytes[index]) else { malformed = true; break }
                value = value << 4 | UInt64(digit)
            }
            values.append(value)
            position = columnEnd
        }
        if values.isEmpty && !malformed { continue }
        guard !malformed, values.count == 3 else {
            let line = String(decoding: bytes[lineStart..<lineEnd], as: UTF8.self)
            result.problems.append("resource line \(lineIndex + 1) is not \"start end flags\" in hex: \"\(line.prefix(80))\"")
            continue
        }
        appendResource(start: values[0], end: values[1], flags: values[2], lineIndex: lineIndex, to: &result)
    }
    return result
}

func appendResource(start: UInt64, end: UInt64, flags: UInt64, lineIndex: Int, to result: inout ParsedResources) {
    let isIO = flags & ResourceFlags.io != 0
    let isMemory = flags & ResourceFlags.memory != 0
    // No type flag, or an empty range, is an unimplemented BAR.
    guard isIO || isMemory, !(start == 0 && end == 0) else { return }
    guard end >= start else {
        result.problems.append("resource line \(lineIndex + 1) ends (\(end.hex())) before it starts (\(start.hex()))")
        return
    }
    let bar = PCIBAR(
        index: lineIndex,
        start: start,
        end: end,
        kind: isIO ? .io : .memory,
        is64Bit: flags & ResourceFlags.memory64 != 0,
        prefetchable: flags & ResourceFlags.prefetch != 0,
        unassigned: flags & ResourceFlags.unset != 0
    )
    if lineIndex == PCIBAR.romIndex { result.rom = bar } else { result.bars.append(bar) }
}
