/// One BAR (or the expansion ROM) as the kernel reports it in a device's `resource` file.
public struct PCIBAR: Sendable, Equatable {
    public enum Kind: String, Sendable { case memory = "mem", io = "io" }

    /// 0-5 for BARs; `PCIBAR.romIndex` for the expansion ROM.
    public let index: Int
    public let start: UInt64
    public let end: UInt64
    public let kind: Kind
    public let is64Bit: Bool
    public let prefetchable: Bool
    /// The kernel could not place the BAR (IORESOURCE_UNSET): start is not a bus address.
    public let unassigned: Bool

    public static let romIndex = 6

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
    public var bars: [PCIBAR] = []
    public var rom: PCIBAR?
    /// Human-readable descriptions of malformed lines (garbage is reported, never fatal).
    public var problems: [String] = []
}

/// Parses the text of a device's `resource` file: one `start end flags` line per resource,
/// BARs 0-5 first, then the ROM; later lines (SR-IOV and bridge windows) are not BARs.
/// Unused resources (all zero, or no type flag) are left out.
public func parseResourceFile(_ text: String) -> ParsedResources {
    var result = ParsedResources()
    var lineIndex = 0
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        defer { lineIndex += 1 }
        guard lineIndex <= PCIBAR.romIndex else { break }
        if line.allSatisfy({ $0 == " " }) {
            // A blank last line is the file's trailing newline; one in the middle is damage.
            continue
        }
        let columns = line.split(separator: " ", omittingEmptySubsequences: true)
        guard columns.count == 3,
              let start = parseHexAttribute(columns[0]),
              let end = parseHexAttribute(columns[1]),
              let flags = parseHexAttribute(columns[2]) else {
            result.problems.append("resource line \(lineIndex + 1) is not \"start end flags\" in hex: \"\(line.prefix(80))\"")
            continue
        }
        let isIO = flags & ResourceFlags.io != 0
        let isMemory = flags & ResourceFlags.memory != 0
        // No type flag, or an empty range, is an unimplemented BAR.
        guard isIO || isMemory, !(start == 0 && end == 0) else { continue }
        guard end >= start else {
            result.problems.append("resource line \(lineIndex + 1) ends (0x\(String(end, radix: 16))) before it starts (0x\(String(start, radix: 16)))")
            continue
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
    return result
}
