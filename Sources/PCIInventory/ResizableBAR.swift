import CLinuxUAPI

/// One BAR the device can resize: the PCIe Resizable BAR capability's entry for it
/// (PCI_EXT_CAP_ID_REBAR) and what the kernel's `resourceN_resize` offers.
public struct ResizableBAR: Sendable, Equatable {
    /// The BAR's index (0-5).
    public let index: Int
    /// The size the control register says the BAR has now, in bytes; nil when unreadable.
    public let currentSize: UInt64?
    /// The sizes the capability lists, ascending, in bytes.
    public let supportedSizes: [UInt64]
    /// The sizes `resourceN_resize` offers, ascending, in bytes; nil when the kernel has no such
    /// file for this BAR (before 6.1, or a BAR it does not consider resizable).
    public var kernelSizes: [UInt64]?

    /// An entry as given.
    public init(index: Int, currentSize: UInt64?, supportedSizes: [UInt64], kernelSizes: [UInt64]? = nil) {
        self.index = index
        self.currentSize = currentSize
        self.supportedSizes = supportedSizes
        self.kernelSizes = kernelSizes
    }

    /// The sizes a resize may ask for: the kernel's list where it has one.
    public var offeredSizes: [UInt64] { kernelSizes ?? supportedSizes }
}

/// The Resizable BAR size code: n stands for 2^n MiB, in the capability's bit masks, its control
/// register and `resourceN_resize`.
public enum ResizableBARSize {
    /// The largest code vfioctl accepts: 2^43 MiB (8 EiB) is past any 64-bit BAR.
    public static let maximumCode = 43

    /// Bytes for code `n`; nil past `maximumCode`.
    public static func bytes(code: Int) -> UInt64? {
        guard code >= 0, code <= maximumCode else { return nil }
        return UInt64(1) << UInt64(20 + code)
    }

    /// The code for `bytes`; nil unless it is a power of two of at least 1 MiB.
    public static func code(bytes: UInt64) -> Int? {
        guard bytes >= 1 << 20, bytes & (bytes - 1) == 0 else { return nil }
        return bytes.trailingZeroBitCount - 20
    }

    /// The sizes whose bits are set in `mask` (bit n: code n), ascending.
    public static func sizes(mask: UInt64) -> [UInt64] {
        (0...maximumCode).filter { mask & (UInt64(1) << UInt64($0)) != 0 }.compactMap { bytes(code: $0) }
    }
}

extension PCIConfigSpace {
    /// The Resizable BAR capability's entries (PCIe r6.0 sec 7.8.6): capability register at +4
    /// and control register at +8 for each of up to six BARs, their count in the first control
    /// register. `kernelSizes` is left nil: sysfs, not config space, says that.
    public var resizableBARs: [ResizableBAR] {
        guard let cap = extendedCapabilityOffset(UInt16(PCI_EXT_CAP_ID_REBAR)),
              let firstControl = u32(cap + Int(PCI_REBAR_CTRL)) else { return [] }
        let count = Int((firstControl & UInt32(PCI_REBAR_CTRL_NBAR_MASK)) >> UInt32(PCI_REBAR_CTRL_NBAR_SHIFT))
        var entries: [ResizableBAR] = []
        for entry in 0..<min(count, 6) {
            guard let capability = u32(cap + Int(PCI_REBAR_CAP) + 8 * entry),
                  let control = u32(cap + Int(PCI_REBAR_CTRL) + 8 * entry) else { break }
            let index = Int(control & UInt32(PCI_REBAR_CTRL_BAR_IDX))
            guard index < 6, !entries.contains(where: { $0.index == index }) else { continue }
            let current = Int((control & UInt32(PCI_REBAR_CTRL_BAR_SIZE)) >> UInt32(PCI_REBAR_CTRL_BAR_SHIFT))
            // Capability bits 4 and up: bit 4 + n is code n, as the kernel's
            // pci_rebar_get_possible_sizes reads them.
            let mask = UInt64((capability & UInt32(truncatingIfNeeded: PCI_REBAR_CAP_SIZES)) >> 4)
            entries.append(ResizableBAR(index: index, currentSize: ResizableBARSize.bytes(code: current),
                                        supportedSizes: ResizableBARSize.sizes(mask: mask)))
        }
        return entries.sorted { $0.index < $1.index }
    }
}

/// A bridge's prefetchable window: line 16 of its `resource` file (the kernel prints 6 BARs, the
/// ROM, 6 IOV resources, then the I/O, memory and prefetchable windows); nil when the line is
/// missing, malformed, closed (all zero) or not a prefetchable memory window.
public func parseBridgePrefetchableWindow(_ text: String) -> ClosedRange<UInt64>? {
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    guard lines.count > 15 else { return nil }
    let values = lines[15].split(separator: " ").map { column -> UInt64? in
        let digits = column.hasPrefix("0x") ? column.dropFirst(2) : column[...]
        return digits.count <= 16 ? UInt64(digits, radix: 16) : nil
    }
    guard values.count == 3, let start = values[0], let end = values[1], let flags = values[2],
          flags & ResourceFlags.memory != 0, flags & ResourceFlags.prefetch != 0, end > start else { return nil }
    return start...end
}

extension Scanner {
    /// The capability's resizable BARs with the sizes sysfs `resourceN_resize` offers (a hex
    /// bitmask, bit n for 2^n MiB; the kernel writes "%016llx").
    static func readResizableBARs(_ config: PCIConfigSpace, directory: String) -> [ResizableBAR] {
        let reader = SysfsReader()
        return config.resizableBARs.map { entry in
            var entry = entry
            if let text = reader.readString(directory + "/resource\(entry.index)_resize"),
               let mask = parseHexAttribute(text) {
                entry.kernelSizes = ResizableBARSize.sizes(mask: mask)
            }
            return entry
        }
    }
}
