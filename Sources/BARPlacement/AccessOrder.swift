// The access orders a fault prediction walks, apart from the kernel's fault model: the access
// patterns, their page sequences, and the seeded permutation and generator behind a random order.

/// The order in which a process touches the pages of a mapping (one access per page listed).
public enum AccessPattern: Sendable, Equatable, Hashable {
    case linear
    case reverse
    /// Every page once, in an order shuffled by a seeded bijection of the page indices (the same
    /// for the same seed and page count, here and in `vfioctl bar touch`): see `SeededPermutation`.
    case random(seed: UInt64)
    /// These page indices (from the mapping's start), in this order; repeats are allowed.
    case pages([UInt64])

    /// The pattern's name without its parameters: linear, reverse, random or pages.
    public var name: String {
        switch self {
        case .linear: "linear"
        case .reverse: "reverse"
        case .random: "random"
        case .pages: "pages"
        }
    }

    /// The page indices for a mapping of `pageCount` pages, without building a list (except the
    /// one `.pages` already holds): a 256 GiB BAR has 64 M pages.
    public func order(pageCount: UInt64) throws(PlacementError) -> PageOrder {
        switch self {
        case .linear: return PageOrder(kind: .linear, pageCount: pageCount)
        case .reverse: return PageOrder(kind: .reverse, pageCount: pageCount)
        case let .random(seed): return PageOrder(kind: .permutation(SeededPermutation(count: pageCount, seed: seed)), pageCount: pageCount)
        case let .pages(list):
            if let bad = list.first(where: { $0 >= pageCount }) { throw .pageOutOfRange(page: bad, pages: pageCount) }
            return PageOrder(kind: .list(list), pageCount: pageCount)
        }
    }

    /// The page indices as an array (one entry per access: for small mappings and tests).
    public func pageOrder(pageCount: UInt64) throws(PlacementError) -> [UInt64] {
        Array(try order(pageCount: pageCount))
    }

    /// Calls `body` with each page index in order, without building the list.
    public func forEachPage(pageCount: UInt64, _ body: (UInt64) -> Void) throws(PlacementError) {
        for page in try order(pageCount: pageCount) { body(page) }
    }

    /// Whether every page is touched exactly once (so the planner can count by blocks).
    var touchesEveryPageOnce: Bool {
        if case .pages = self { return false }
        return true
    }
}

/// The pages of a mapping in the order an `AccessPattern` touches them: a sequence computed on
/// the fly.
public struct PageOrder: Sequence, Sendable {
    enum Kind: Sendable {
        case linear, reverse
        case permutation(SeededPermutation)
        case list([UInt64])
    }
    let kind: Kind
    /// Base pages in the mapping; every index the order yields is below it.
    public let pageCount: UInt64

    /// Accesses in the order: `pageCount`, or the list's length.
    public var accessCount: UInt64 {
        if case let .list(list) = kind { return UInt64(list.count) }
        return pageCount
    }

    /// Yields the page indices one by one, each computed when asked for.
    public struct Iterator: IteratorProtocol {
        let order: PageOrder
        var position: UInt64 = 0
        var listIndex = 0
        /// The next page index (from the mapping's start); nil after the last access.
        public mutating func next() -> UInt64? {
            switch order.kind {
            case let .list(list):
                guard listIndex < list.count else { return nil }
                defer { listIndex += 1 }
                return list[listIndex]
            case .linear:
                guard position < order.pageCount else { return nil }
                defer { position += 1 }
                return position
            case .reverse:
                guard position < order.pageCount else { return nil }
                defer { position += 1 }
                return order.pageCount - 1 - position
            case let .permutation(permutation):
                guard position < order.pageCount else { return nil }
                defer { position += 1 }
                return permutation.image(of: position)
            }
        }
    }

    /// An iterator from the first access.
    public func makeIterator() -> Iterator { Iterator(order: self) }
}

/// A seeded bijection of [0, count): a 4-round Feistel network on the smallest even number of
/// bits that holds `count`, with cycle walking back into range. Any position's image costs a
/// few multiplications and no memory, so a random order over 64 M pages needs no table.
public struct SeededPermutation: Sendable, Equatable, Hashable {
    /// The size of the domain: every image lies in [0, count).
    public let count: UInt64
    private let halfBits: UInt64
    private let keys: [UInt64]

    /// The permutation of [0, `count`) keyed by `seed` (via `SplitMix64`): the same seed and
    /// count give the same order on every platform.
    public init(count: UInt64, seed: UInt64) {
        self.count = count
        var bits: UInt64 = 1
        // Smallest h with 2^(2h) >= count (h <= 32 covers every UInt64 count).
        while bits < 32 && (UInt64(1) << (2 * bits)) < count { bits += 1 }
        halfBits = bits
        var generator = SplitMix64(seed: seed)
        keys = (0..<4).map { _ in generator.next() }
    }

    /// The page touched at `position` (< count).
    public func image(of position: UInt64) -> UInt64 {
        guard count > 1 else { return 0 }
        // Cycle walking: the network permutes [0, 2^(2h)); following it from a value below
        // `count` until it lands below `count` again is a permutation of [0, count) (the domain
        // is under 4 x count, so under 4 steps on average).
        var value = position
        repeat { value = encrypt(value) } while value >= count
        return value
    }

    private func encrypt(_ value: UInt64) -> UInt64 {
        let mask: UInt64 = halfBits >= 32 ? 0xffff_ffff : (UInt64(1) << halfBits) - 1
        var left = (value >> halfBits) & mask
        var right = value & mask
        for key in keys {
            let mixed = Self.mix(right ^ key) & mask
            (left, right) = (right, left ^ mixed)
        }
        return (left << halfBits) | right
    }

    /// SplitMix64's finalizer.
    private static func mix(_ input: UInt64) -> UInt64 {
        var z = input &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A small seeded generator (SplitMix64): fixed output for a seed, on every platform.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    /// A generator whose whole output is fixed by `seed`.
    public init(seed: UInt64) { state = seed }
    /// The next 64 pseudo-random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
