/// A kernel CPU list as sysfs prints it ("0-7,16-23"; "" for none): validated before it is shown
/// or compared, since it comes from a file.
public struct CPUList: Sendable, Equatable {
    /// The CPU ranges, in the order written.
    public let ranges: [ClosedRange<Int>]

    /// nil unless `text` is comma-separated CPU numbers and ascending-bounds ranges (at most
    /// 8 decimal digits each, so counting can never overflow).
    public init?(parsing text: some StringProtocol) {
        var ranges: [ClosedRange<Int>] = []
        if !text.isEmpty {
            for part in text.split(separator: ",", omittingEmptySubsequences: false) {
                let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
                guard bounds.count == 1 || bounds.count == 2,
                      bounds.allSatisfy({ !$0.isEmpty && $0.count <= 8 && $0.allSatisfy(\.isASCIIDigit) }),
                      let low = Int(bounds[0]), let high = Int(bounds[bounds.count - 1]), low <= high else { return nil }
                ranges.append(low...high)
            }
        }
        self.ranges = ranges
    }

    /// How many CPUs the list names.
    public var count: Int { ranges.reduce(0) { $0 + $1.count } }

    /// The kernel's own spelling.
    public var text: String {
        ranges.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ",")
    }
}

extension Character {
    var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
