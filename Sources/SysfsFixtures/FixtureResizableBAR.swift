/// A BAR the fixture device can resize: an entry of its Resizable BAR extended capability and,
/// unless `resizeFile` is false, the kernel's `resourceN_resize` with the same sizes.
public struct FixtureResizableBAR: Sendable, Hashable {
    /// The BAR's index (0-5); its current size is the size of the device's BAR of that index.
    public var index: Int
    /// Supported sizes: bit n for 2^n MiB, as the capability (shifted) and sysfs give them.
    public var sizeMask: UInt64
    /// Whether sysfs has `resource<index>_resize` (Linux 6.1 and later).
    public var resizeFile: Bool

    public init(index: Int, sizeMask: UInt64, resizeFile: Bool = true) {
        self.index = index
        self.sizeMask = sizeMask
        self.resizeFile = resizeFile
    }

    /// Every size from `smallest` to `largest` MiB-code inclusive (n: 2^n MiB).
    public static func sizes(_ index: Int, codes: ClosedRange<Int>, resizeFile: Bool = true) -> FixtureResizableBAR {
        FixtureResizableBAR(index: index, sizeMask: codes.reduce(0) { $0 | UInt64(1) << UInt64($1) }, resizeFile: resizeFile)
    }

    /// `resourceN_resize` as the kernel prints it ("%016llx\n").
    var resizeFileText: String {
        let digits = String(sizeMask, radix: 16)
        return String(repeating: "0", count: max(0, 16 - digits.count)) + digits + "\n"
    }
}
