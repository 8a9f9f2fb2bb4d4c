/// Which check vfio-pci's huge_fault handler makes before it inserts a mapping of order k > 0.
public enum HugeFaultRule: String, Sendable, CaseIterable, Codable {
    /// Linux 6.12 with "vfio/pci: Align huge faults to order": the faulting address aligned down
    /// to 2^k pages must lie inside the VMA, the block must end inside it, and the pfn at the
    /// aligned address must be 2^k aligned. Any page of a suitable block can fault it in.
    case alignedBlock = "aligned-block"
    /// The handler as first merged: the faulting address itself had to be 2^k-page aligned (and
    /// its pfn, and the block inside the VMA), so only a first touch at a block's start got a
    /// huge mapping.
    case alignedAddress = "aligned-address"
}

/// How the kernel walks a fault, beyond the handler's rule.
public struct KernelFaultModel: Sendable, Equatable, Hashable {
    public var rule: HugeFaultRule
    /// Linux 6.12 first handles a user fault under the per-VMA lock. vfio-pci's VMA has no
    /// `map_pages`, so a PTE-level read fault there returns VM_FAULT_RETRY before calling the
    /// handler (`vmf_can_call_fault`), and the fault is walked again under mmap_lock. The PUD
    /// attempt is not repeated (the first walk allocated the PMD table), but the PMD attempt is
    /// (no PTE table yet): hence 2 order-9 fallbacks per 2 MiB block, 1026 for a 1 GiB BAR mapped
    /// 4 KiB off (LAB-NOTES).
    public var retriesPTEFaultUnderMmapLock: Bool

    public init(rule: HugeFaultRule = .alignedBlock, retriesPTEFaultUnderMmapLock: Bool = true) {
        self.rule = rule
        self.retriesPTEFaultUnderMmapLock = retriesPTEFaultUnderMmapLock
    }

    /// The lab's kernel: Debian 6.12 with the fix.
    public static let linux612 = KernelFaultModel()
    /// The same kernel before the fix.
    public static let linux612Unfixed = KernelFaultModel(rule: .alignedAddress)
}

/// The order in which a process touches the pages of a mapping (one access per page listed).
public enum AccessPattern: Sendable, Equatable, Hashable {
    case linear
    case reverse
    /// Every page once, in an order shuffled by a seeded generator (the same for the same seed
    /// and page count, here and in `vfioctl bar touch`).
    case random(seed: UInt64)
    /// These page indices (from the mapping's start), in this order; repeats are allowed.
    case pages([UInt64])

    public var name: String {
        switch self {
        case .linear: "linear"
        case .reverse: "reverse"
        case .random: "random"
        case .pages: "pages"
        }
    }

    /// The page indices for a mapping of `pageCount` pages.
    public func pageOrder(pageCount: UInt64) throws(PlacementError) -> [UInt64] {
        switch self {
        case .linear:
            return Array(0..<pageCount)
        case .reverse:
            return Array((0..<pageCount).reversed())
        case let .random(seed):
            var order = Array(0..<pageCount)
            var generator = SplitMix64(seed: seed)
            // Fisher-Yates, drawing from the generator so the order depends only on the seed.
            var index = order.count - 1
            while index > 0 {
                let other = Int(generator.next() % UInt64(index + 1))
                order.swapAt(index, other)
                index -= 1
            }
            return order
        case let .pages(list):
            if let bad = list.first(where: { $0 >= pageCount }) { throw .pageOutOfRange(page: bad, pages: pageCount) }
            return list
        }
    }

    /// Calls `body` with each page index in order, without building the list for linear and
    /// reverse (a 64 GiB BAR has 16 M pages).
    public func forEachPage(pageCount: UInt64, _ body: (UInt64) -> Void) throws(PlacementError) {
        switch self {
        case .linear:
            var page: UInt64 = 0
            while page < pageCount { body(page); page += 1 }
        case .reverse:
            var page = pageCount
            while page > 0 { page -= 1; body(page) }
        case .random, .pages:
            for page in try pageOrder(pageCount: pageCount) { body(page) }
        }
    }
}

/// A small seeded generator (SplitMix64): fixed output for a seed, on every platform.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// What one call of the fault handler returned: the mapping was inserted (VM_FAULT_NOPAGE,
/// ret 256) or the kernel must retry at a smaller order (VM_FAULT_FALLBACK, ret 2048).
public enum FaultOutcome: String, Sendable, Codable, Comparable {
    case inserted, fallback
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// One handler call: what the kprobe on vfio_pci_mmap_huge_fault sees.
public struct HandlerCall: Sendable, Equatable, Hashable {
    public let order: Int
    public let outcome: FaultOutcome
}

/// A page-table entry the handler installed.
public struct InstalledMapping: Sendable, Equatable, Hashable {
    public let order: Int
    public let virtualAddress: UInt64
    public let physicalAddress: UInt64
    public init(order: Int, virtualAddress: UInt64, physicalAddress: UInt64) {
        self.order = order
        self.virtualAddress = virtualAddress
        self.physicalAddress = physicalAddress
    }
}

/// A page-table slot: the entry of level `order` (18: PUD, 9: PMD) that covers `address`.
public struct TableSlot: Sendable, Equatable, Hashable {
    public let order: Int
    public let address: UInt64
    public init(order: Int, address: UInt64) {
        self.order = order
        self.address = address
    }
}

/// One access that faulted: the handler calls it caused, in order, and what got installed.
public struct FaultStep: Sendable, Equatable {
    public let page: UInt64
    public let calls: [HandlerCall]
    public let installed: InstalledMapping
}

/// Handler calls counted by (order, outcome), as the lab's histogram prints them.
public struct HandlerCallCount: Sendable, Equatable, Hashable, Comparable {
    public let order: Int
    public let outcome: FaultOutcome
    public let count: UInt64
    public static func < (a: Self, b: Self) -> Bool { (a.order, a.outcome) < (b.order, b.outcome) }
}

/// The planner's prediction for one mapping and access pattern.
public struct FaultPrediction: Sendable, Equatable {
    /// Handler calls by order and outcome, ascending by order then outcome.
    public let calls: [HandlerCallCount]
    /// Mappings installed, by order (orders with none are left out).
    public let mappingsByOrder: [Int: UInt64]
    /// Accesses that faulted (the rest hit an existing mapping).
    public let faultingAccesses: UInt64
    public let accesses: UInt64

    public var mappingCount: UInt64 { mappingsByOrder.values.reduce(0, +) }
    public var handlerCallCount: UInt64 { calls.reduce(0) { $0 + $1.count } }
    public func count(order: Int, _ outcome: FaultOutcome) -> UInt64 {
        calls.first { $0.order == order && $0.outcome == outcome }?.count ?? 0
    }
}

/// Predicts, fault by fault, what vfio-pci's huge_fault handler does for a mapping of a BAR.
/// Pure: no fds, no memory touched. Models the kernel's page-table walk (mm/memory.c
/// `__handle_mm_fault`): a huge order is tried only while the page-table entry for its level
/// is empty, largest first; a fallback at a level above the last huge one allocates the next
/// table, so later faults under it skip that level; a PTE fault allocates the PTE table.
/// Page tables start empty unless `tablesPresent` says otherwise: a 1 GiB or 2 MiB slot the
/// mapping only partly covers may already hold a table for another mapping in it (then the
/// kernel skips that level's attempt there). `vfioctl bar touch` keeps those slots free with a
/// guard reservation, so its predictions use none.
public struct FaultPlanner: Sendable {
    public let mapping: MappingGeometry
    public let geometry: PageGeometry
    public let model: KernelFaultModel
    /// Slots whose table exists before the first access: (level order 18 or 9, any address in
    /// the slot).
    public let tablesPresent: [TableSlot]

    public init(mapping: MappingGeometry, geometry: PageGeometry = .x86_64, model: KernelFaultModel = .linux612,
                tablesPresent: [TableSlot] = []) {
        self.mapping = mapping
        self.geometry = geometry
        self.model = model
        self.tablesPresent = tablesPresent
    }

    /// Runs the pattern and counts; `observe` (if given) sees every faulting access in order.
    public func predict(_ pattern: AccessPattern, observe: ((FaultStep) -> Void)? = nil) throws(PlacementError) -> FaultPrediction {
        var state = WalkState(mapping: mapping)
        for present in tablesPresent { state.markTable(present) }
        // Counters by level (0: order 0, 1: order 9, 2: order 18) and outcome: a dictionary
        // per call would dominate the walk of a 2 GiB BAR's 524288 pages.
        var callCounts = [UInt64](repeating: 0, count: 6)
        var mappings = [UInt64](repeating: 0, count: 3)
        var faulting: UInt64 = 0
        var calls: [HandlerCall] = []
        calls.reserveCapacity(8)
        var accesses: UInt64 = 0
        try pattern.forEachPage(pageCount: mapping.pageCount) { page in
            accesses += 1
            calls.removeAll(keepingCapacity: true)
            guard let installed = fault(page: page, state: &state, calls: &calls) else { return }
            faulting += 1
            for call in calls { callCounts[Self.counterIndex(call.order) * 2 + (call.outcome == .inserted ? 0 : 1)] += 1 }
            mappings[Self.counterIndex(installed.order)] += 1
            observe?(FaultStep(page: page, calls: calls, installed: installed))
        }
        var sorted: [HandlerCallCount] = []
        var byOrder: [Int: UInt64] = [:]
        for (index, order) in [0, 9, 18].enumerated() {
            for outcome in [FaultOutcome.fallback, .inserted] {
                let count = callCounts[index * 2 + (outcome == .inserted ? 0 : 1)]
                if count > 0 { sorted.append(HandlerCallCount(order: order, outcome: outcome, count: count)) }
            }
            if mappings[index] > 0 { byOrder[order] = mappings[index] }
        }
        return FaultPrediction(calls: sorted, mappingsByOrder: byOrder, faultingAccesses: faulting, accesses: accesses)
    }

    private static func counterIndex(_ order: Int) -> Int { order == 0 ? 0 : order == 9 ? 1 : 2 }

    /// One access to `page`; nil when it hits an existing mapping.
    private func fault(page: UInt64, state: inout WalkState, calls: inout [HandlerCall]) -> InstalledMapping? {
        let address = mapping.virtualStart + (page << UInt64(PageGeometry.pageShift))
        if state.isMapped(address) { return nil }
        if model.retriesPTEFaultUnderMmapLock {
            if let installed = walk(address, underVMALock: true, state: &state, calls: &calls) { return installed }
        }
        // Without the VMA-lock pass, or its retry under mmap_lock: always ends in a mapping.
        return walk(address, underVMALock: false, state: &state, calls: &calls)
    }

    /// One walk of __handle_mm_fault. Returns nil when it ends in VM_FAULT_RETRY.
    private func walk(_ address: UInt64, underVMALock: Bool, state: inout WalkState, calls: inout [HandlerCall]) -> InstalledMapping? {
        let levels = PageGeometry.tableLevelOrders
        for (level, order) in levels.enumerated() {
            let slot = state.slot(address, level: level)
            guard state.entries[level][slot] == .empty else { continue }
            // thp_vma_allowable_order: an unsupported order is not tried, but the walk goes on.
            guard geometry.supports(order: order) else {
                if level < levels.count - 1 { state.entries[level][slot] = .table }
                continue
            }
            if let blockStart = hugeBlock(order: order, faultingAt: address) {
                calls.append(HandlerCall(order: order, outcome: .inserted))
                state.entries[level][slot] = .huge
                return InstalledMapping(order: order, virtualAddress: blockStart, physicalAddress: mapping.physical(at: blockStart))
            }
            calls.append(HandlerCall(order: order, outcome: .fallback))
            // Falling back past this level allocates the table below it (pmd_alloc), except below
            // the last huge level: that table (the PTE table) is made by the PTE fault itself.
            if level < levels.count - 1 { state.entries[level][slot] = .table }
        }
        if underVMALock { return nil }
        let pageStart = address & ~(PageGeometry.pageSize - 1)
        calls.append(HandlerCall(order: 0, outcome: .inserted))
        state.markPTE(pageStart)
        return InstalledMapping(order: 0, virtualAddress: pageStart, physicalAddress: mapping.physical(at: pageStart))
    }

    /// Where a mapping of `order` would start for a fault at `address`, or nil if the handler
    /// falls back (see `HugeFaultRule`).
    func hugeBlock(order: Int, faultingAt address: UInt64) -> UInt64? {
        let size = PageGeometry.bytes(order: order)
        let blockStart: UInt64
        switch model.rule {
        case .alignedBlock:
            blockStart = address & ~(size - 1)
            guard blockStart >= mapping.virtualStart else { return nil }
        case .alignedAddress:
            guard address % size == 0 else { return nil }
            blockStart = address
        }
        guard blockStart <= mapping.virtualEnd, size <= mapping.virtualEnd - blockStart else { return nil }
        guard mapping.physical(at: blockStart) % size == 0 else { return nil }
        return blockStart
    }
}

/// Page-table state of the slots the mapping touches, one array per table level (PUD, PMD)
/// plus a bitmap of pages with a PTE.
struct WalkState {
    enum Entry: UInt8 { case empty, table, huge }
    var entries: [[Entry]]
    private var firstSlot: [UInt64]
    private var shifts: [UInt64]
    private var pteBits: [UInt64]
    private let firstPage: UInt64
    private let lastLevel: Int?

    init(mapping: MappingGeometry) {
        let huge = PageGeometry.tableLevelOrders
        var entries: [[Entry]] = []
        var firstSlot: [UInt64] = []
        var shifts: [UInt64] = []
        for order in huge {
            let shift = UInt64(PageGeometry.pageShift + order)
            let first = mapping.virtualStart >> shift
            let last = (mapping.virtualEnd - 1) >> shift
            entries.append(Array(repeating: .empty, count: Int(last - first + 1)))
            firstSlot.append(first)
            shifts.append(shift)
        }
        self.entries = entries
        self.firstSlot = firstSlot
        self.shifts = shifts
        self.firstPage = mapping.virtualStart >> UInt64(PageGeometry.pageShift)
        self.pteBits = Array(repeating: 0, count: Int((mapping.pageCount + 63) / 64))
        self.lastLevel = huge.isEmpty ? nil : huge.count - 1
    }

    func slot(_ address: UInt64, level: Int) -> Int { Int((address >> shifts[level]) - firstSlot[level]) }

    func isMapped(_ address: UInt64) -> Bool {
        for level in entries.indices where entries[level][slot(address, level: level)] == .huge { return true }
        let page = Int((address >> UInt64(PageGeometry.pageShift)) - firstPage)
        return pteBits[page >> 6] & (1 << UInt64(page & 63)) != 0
    }

    mutating func markTable(_ present: TableSlot) {
        guard let level = PageGeometry.tableLevelOrders.firstIndex(of: present.order) else { return }
        let index = Int64(bitPattern: present.address >> shifts[level]) - Int64(bitPattern: firstSlot[level])
        guard index >= 0, index < entries[level].count else { return }
        entries[level][Int(index)] = .table
    }

    mutating func markPTE(_ address: UInt64) {
        let page = Int((address >> UInt64(PageGeometry.pageShift)) - firstPage)
        pteBits[page >> 6] |= 1 << UInt64(page & 63)
        if let lastLevel { entries[lastLevel][slot(address, level: lastLevel)] = .table }
    }
}
