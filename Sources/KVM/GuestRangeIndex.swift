/// Non-overlapping guest ranges of one address space, sorted by start, in chunks of at most
/// `chunkLimit` entries: insert, remove and the overlap query are a binary search plus a move of
/// at most one chunk, so 32764 slots cost well under a microsecond per change (a plain sorted
/// array would move up to 32764 entries on each change at the front).
struct GuestRangeIndex {
    struct Entry: Equatable {
        var start: UInt64
        var end: UInt64
        var id: MemslotID
    }
    static let chunkLimit = 512
    /// Non-empty chunks; all entries of chunk i start below all entries of chunk i + 1.
    private var chunks: [[Entry]] = []

    var entries: [Entry] { chunks.flatMap { $0 } }

    /// Index of the last chunk whose first entry starts at or below `address`, or nil if none.
    private func chunk(atOrBelow address: UInt64) -> Int? {
        var low = 0, high = chunks.count  // answer is the count of chunks with first.start <= address, minus one
        while low < high {
            let mid = (low + high) / 2
            if chunks[mid][0].start <= address { low = mid + 1 } else { high = mid }
        }
        return low == 0 ? nil : low - 1
    }

    /// Position of the first entry in `entries` starting above `address`.
    private static func firstAbove(_ address: UInt64, in entries: [Entry]) -> Int {
        var low = 0, high = entries.count
        while low < high {
            let mid = (low + high) / 2
            if entries[mid].start <= address { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// The entry before `(chunk, index)` in sorted order, if any.
    private func previous(_ chunk: Int, _ index: Int) -> (Int, Int)? {
        if index > 0 { return (chunk, index - 1) }
        return chunk > 0 ? (chunk - 1, chunks[chunk - 1].count - 1) : nil
    }

    /// An entry other than `excluded` overlapping `range`. Entries do not overlap one another,
    /// so their ends are sorted too: only the last entry starting below `range.upperBound` can
    /// overlap, or the one before it when that one is `excluded`.
    func overlap(with range: Range<UInt64>, excluding excluded: MemslotID?) -> MemslotID? {
        guard !range.isEmpty, let c = chunk(atOrBelow: range.upperBound - 1) else { return nil }
        let i = Self.firstAbove(range.upperBound - 1, in: chunks[c]) - 1
        var position: (Int, Int)? = (c, i)
        for _ in 0..<2 {
            guard let (pc, pi) = position else { return nil }
            let entry = chunks[pc][pi]
            if entry.id != excluded { return entry.end > range.lowerBound ? entry.id : nil }
            position = previous(pc, pi)
        }
        return nil
    }

    mutating func insert(_ range: Range<UInt64>, id: MemslotID) {
        let entry = Entry(start: range.lowerBound, end: range.upperBound, id: id)
        guard !chunks.isEmpty else { chunks = [[entry]]; return }
        let c = chunk(atOrBelow: entry.start) ?? 0
        let i = Self.firstAbove(entry.start, in: chunks[c])
        chunks[c].insert(entry, at: i)
        if chunks[c].count > Self.chunkLimit {
            let upper = Array(chunks[c][(Self.chunkLimit / 2)...])
            chunks[c].removeSubrange((Self.chunkLimit / 2)...)
            chunks.insert(upper, at: c + 1)
        }
    }

    mutating func remove(start: UInt64, id: MemslotID) {
        guard let c = chunk(atOrBelow: start) else { return }
        let i = Self.firstAbove(start, in: chunks[c]) - 1
        guard i >= 0, chunks[c][i].start == start, chunks[c][i].id == id else { return }
        chunks[c].remove(at: i)
        if chunks[c].isEmpty { chunks.remove(at: c) }
    }
}
