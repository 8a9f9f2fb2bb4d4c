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
    /// The check the huge_fault handler makes before it inserts an order above 0.
    public var rule: HugeFaultRule
    /// Linux 6.12 first handles a user fault under the per-VMA lock. vfio-pci's VMA has no
    /// `map_pages`, so a PTE-level read fault there returns VM_FAULT_RETRY before calling the
    /// handler (`vmf_can_call_fault`), and the fault is walked again under mmap_lock. The PUD
    /// attempt is not repeated (the first walk allocated the PMD table), but the PMD attempt is
    /// (no PTE table yet): hence 2 order-9 fallbacks per 2 MiB block, 1026 for a 1 GiB BAR mapped
    /// 4 KiB off (measured in the lab's hugefault-placement scenario).
    public var retriesPTEFaultUnderMmapLock: Bool

    /// A model; the defaults are the fixed 6.12 kernel (`linux612`).
    public init(rule: HugeFaultRule = .alignedBlock, retriesPTEFaultUnderMmapLock: Bool = true) {
        self.rule = rule
        self.retriesPTEFaultUnderMmapLock = retriesPTEFaultUnderMmapLock
    }

    /// The lab's kernel: Debian 6.12 with the fix.
    public static let linux612 = KernelFaultModel()
    /// The same kernel before the fix.
    public static let linux612Unfixed = KernelFaultModel(rule: .alignedAddress)
}

/// What one call of the fault handler returned: the mapping was inserted (VM_FAULT_NOPAGE,
/// ret 256) or the kernel must retry at a smaller order (VM_FAULT_FALLBACK, ret 2048).
public enum FaultOutcome: String, Sendable, Codable, Comparable {
    case inserted, fallback
    /// By raw value (fallback before inserted), for a stable histogram order.
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// One handler call: what the kprobe on vfio_pci_mmap_huge_fault sees.
public struct HandlerCall: Sendable, Equatable, Hashable {
    /// The page order the handler was called with (0, 9 or 18 on x86-64).
    public let order: Int
    /// Whether it inserted a mapping or fell back.
    public let outcome: FaultOutcome
}

/// A page-table entry the handler installed.
public struct InstalledMapping: Sendable, Equatable, Hashable {
    /// The entry's page order.
    public let order: Int
    /// The entry's first virtual address, aligned to its size.
    public let virtualAddress: UInt64
    /// The bus address behind `virtualAddress`.
    public let physicalAddress: UInt64
    /// An entry of `order` mapping `virtualAddress` to `physicalAddress`.
    public init(order: Int, virtualAddress: UInt64, physicalAddress: UInt64) {
        self.order = order
        self.virtualAddress = virtualAddress
        self.physicalAddress = physicalAddress
    }
}

/// A page-table slot: the entry of level `order` (18: PUD, 9: PMD) that covers `address`.
public struct TableSlot: Sendable, Equatable, Hashable {
    /// The level: 18 (PUD) or 9 (PMD).
    public let order: Int
    /// Any address inside the slot.
    public let address: UInt64
    /// The slot of level `order` that covers `address`.
    public init(order: Int, address: UInt64) {
        self.order = order
        self.address = address
    }
}

/// One access that faulted: the handler calls it caused, in order, and what got installed.
public struct FaultStep: Sendable, Equatable {
    /// The page index (from the mapping's start) whose access faulted.
    public let page: UInt64
    /// The handler calls it caused, in order; the last one inserted `installed`.
    public let calls: [HandlerCall]
    /// The entry the fault installed.
    public let installed: InstalledMapping
}

/// Handler calls counted by (order, outcome), as the lab's histogram prints them.
public struct HandlerCallCount: Sendable, Equatable, Hashable, Comparable {
    /// The page order of the calls.
    public let order: Int
    /// Their outcome.
    public let outcome: FaultOutcome
    /// How many calls had this order and outcome.
    public let count: UInt64
    /// By order, then outcome.
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
    /// Accesses in the pattern, faulting or not.
    public let accesses: UInt64

    /// Mappings installed, all orders together.
    public var mappingCount: UInt64 { mappingsByOrder.values.reduce(0, +) }
    /// Handler calls, all orders and outcomes together.
    public var handlerCallCount: UInt64 { calls.reduce(0) { $0 + $1.count } }
    /// Handler calls of `order` with `outcome`; 0 when there were none.
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
    /// The mapping whose faults are predicted.
    public let mapping: MappingGeometry
    /// The page orders the fault path tries.
    public let geometry: PageGeometry
    /// The kernel's handler rule and fault walk.
    public let model: KernelFaultModel
    /// Slots whose table exists before the first access: (level order 18 or 9, any address in
    /// the slot).
    public let tablesPresent: [TableSlot]

    /// A planner; the defaults are x86-64's orders, the fixed 6.12 kernel and empty page tables.
    public init(mapping: MappingGeometry, geometry: PageGeometry = .x86_64, model: KernelFaultModel = .linux612,
                tablesPresent: [TableSlot] = []) {
        self.mapping = mapping
        self.geometry = geometry
        self.model = model
        self.tablesPresent = tablesPresent
    }

    /// Runs the pattern and counts; `observe` (if given) sees every faulting access in order.
    ///
    /// Linear, reverse and random orders touch every page once; their counts come from the page
    /// tables' blocks, not the pages (a 256 GiB BAR in microseconds). With `observe`, or an
    /// explicit `.pages` list, the walk goes access by access (cost and memory per access).
    public func predict(_ pattern: AccessPattern, observe: ((FaultStep) -> Void)? = nil) throws(PlacementError) -> FaultPrediction {
        let order = try pattern.order(pageCount: mapping.pageCount)
        if observe == nil, pattern.touchesEveryPageOnce {
            return try BlockCounter(planner: self, order: order).count()
        }
        return walk(order, observe: observe)
    }

    /// Access by access: the kernel's walk for each page in `order`.
    private func walk(_ order: PageOrder, observe: ((FaultStep) -> Void)?) -> FaultPrediction {
        var state = WalkState(tablesPresent: tablesPresent)
        var tally = FaultTally()
        var calls: [HandlerCall] = []
        calls.reserveCapacity(8)
        for page in order {
            calls.removeAll(keepingCapacity: true)
            guard let installed = fault(page: page, state: &state, calls: &calls) else { continue }
            for call in calls { tally.call(call.order, call.outcome) }
            tally.insert(installed.order)
            observe?(FaultStep(page: page, calls: calls, installed: installed))
        }
        return tally.prediction(accesses: order.accessCount)
    }

    /// One access to `page`; nil when it hits an existing mapping.
    private func fault(page: UInt64, state: inout WalkState, calls: inout [HandlerCall]) -> InstalledMapping? {
        // page < pageCount (checked by AccessPattern.order), so this stays inside the mapping.
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
            guard state.entry(address, level: level) == .empty else { continue }
            // thp_vma_allowable_order: an unsupported order is not tried, but the walk goes on.
            guard geometry.supports(order: order) else {
                if level < levels.count - 1 { state.set(address, level: level, .table) }
                continue
            }
            if let blockStart = hugeBlock(order: order, faultingAt: address) {
                calls.append(HandlerCall(order: order, outcome: .inserted))
                state.set(address, level: level, .huge)
                return InstalledMapping(order: order, virtualAddress: blockStart, physicalAddress: mapping.physical(at: blockStart))
            }
            calls.append(HandlerCall(order: order, outcome: .fallback))
            // Falling back past this level allocates the table below it (pmd_alloc), except below
            // the last huge level: that table (the PTE table) is made by the PTE fault itself.
            if level < levels.count - 1 { state.set(address, level: level, .table) }
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

/// Handler calls and mappings counted by level (0: order 0, 1: order 9, 2: order 18): fixed
/// arrays, since a dictionary per call would dominate a walk of half a million pages.
struct FaultTally {
    private var calls = [UInt64](repeating: 0, count: 6)
    private var mappings = [UInt64](repeating: 0, count: 3)
    private var faulting: UInt64 = 0

    private static func level(_ order: Int) -> Int { order == 0 ? 0 : order == 9 ? 1 : 2 }

    mutating func call(_ order: Int, _ outcome: FaultOutcome, times: UInt64 = 1) {
        calls[Self.level(order) * 2 + (outcome == .inserted ? 0 : 1)] += times
    }

    /// `times` faults, each installing one mapping of `order`.
    mutating func insert(_ order: Int, times: UInt64 = 1) {
        mappings[Self.level(order)] += times
        faulting += times
    }

    /// Adds `other` `times` over. Every count is at most a few per page of the mapping (under
    /// 2^52 pages), so the sums cannot overflow.
    mutating func add(_ other: FaultTally, times: UInt64) {
        for index in calls.indices { calls[index] += other.calls[index] * times }
        for index in mappings.indices { mappings[index] += other.mappings[index] * times }
        faulting += other.faulting * times
    }

    func prediction(accesses: UInt64) -> FaultPrediction {
        var sorted: [HandlerCallCount] = []
        var byOrder: [Int: UInt64] = [:]
        for (index, order) in [0, 9, 18].enumerated() {
            for outcome in [FaultOutcome.fallback, .inserted] {
                let count = calls[index * 2 + (outcome == .inserted ? 0 : 1)]
                if count > 0 { sorted.append(HandlerCallCount(order: order, outcome: outcome, count: count)) }
            }
            if mappings[index] > 0 { byOrder[order] = mappings[index] }
        }
        return FaultPrediction(calls: sorted, mappingsByOrder: byOrder, faultingAccesses: faulting, accesses: accesses)
    }
}

/// Page-table state for the access-by-access walk: entries of the PUD and PMD slots touched so
/// far (absent: empty) and the pages holding a PTE. Sparse, so its size follows the accesses,
/// not the mapping.
struct WalkState {
    enum Entry: UInt8 { case empty, table, huge }
    private var entries: [[UInt64: Entry]]
    private var ptePages = Set<UInt64>()
    private static let shifts = PageGeometry.tableLevelOrders.map { UInt64(PageGeometry.pageShift + $0) }

    init(tablesPresent: [TableSlot]) {
        entries = Array(repeating: [:], count: PageGeometry.tableLevelOrders.count)
        for present in tablesPresent {
            guard let level = PageGeometry.tableLevelOrders.firstIndex(of: present.order) else { continue }
            entries[level][present.address >> Self.shifts[level]] = .table
        }
    }

    func entry(_ address: UInt64, level: Int) -> Entry { entries[level][address >> Self.shifts[level]] ?? .empty }

    mutating func set(_ address: UInt64, level: Int, _ entry: Entry) { entries[level][address >> Self.shifts[level]] = entry }

    func isMapped(_ address: UInt64) -> Bool {
        for level in entries.indices where entry(address, level: level) == .huge { return true }
        return ptePages.contains(address >> UInt64(PageGeometry.pageShift))
    }

    mutating func markPTE(_ address: UInt64) {
        ptePages.insert(address >> UInt64(PageGeometry.pageShift))
        if let last = entries.indices.last { set(address, level: last, .table) }
    }
}

/// Counts the walk of an order that touches every page once, block by block.
///
/// With every page touched once the kernel's work in a page-table slot depends only on the
/// slot: the first fault in a 1 GiB slot makes the one PUD attempt (if its entry is empty); the
/// first fault in each 2 MiB slot under it makes the PMD attempt(s); every page left then takes
/// one PTE fault. Which page faults first matters only to the older rule (the faulting address
/// itself had to be aligned): linear touches a slot's lowest page first, reverse its highest,
/// and for random the order is followed until every 2 MiB slot has been seen. Slots that are
/// whole, inside the mapping and without a pre-existing table behave alike (the virtual to
/// physical offset is the same for all), so one of them is counted and multiplied; the first
/// and last slots and those `tablesPresent` names are counted one by one.
struct BlockCounter {
    let planner: FaultPlanner
    let order: PageOrder
    private let start: UInt64
    private let end: UInt64
    private let presentPUD: Set<UInt64>
    private let presentPMD: Set<UInt64>
    private static let pudShift = UInt64(PageGeometry.pageShift + 18)
    private static let pmdShift = UInt64(PageGeometry.pageShift + 9)

    /// For the older rule: whether each slot's first access is at the slot's first page.
    private enum FirstTouch {
        case lowest, highest
        /// By slot index from the mapping's first slot: (PUD slots, PMD slots).
        case recorded(pud: [Bool], pmd: [Bool])
    }

    /// Random orders under the older rule record one flag per 2 MiB slot: at most this many
    /// (32 TiB of mapping).
    static let recordedSlotLimit: UInt64 = 1 << 24

    init(planner: FaultPlanner, order: PageOrder) {
        self.planner = planner
        self.order = order
        start = planner.mapping.virtualStart
        end = planner.mapping.virtualEnd
        var pud = Set<UInt64>(), pmd = Set<UInt64>()
        for present in planner.tablesPresent {
            if present.order == 18 { pud.insert(present.address >> Self.pudShift) }
            if present.order == 9 { pmd.insert(present.address >> Self.pmdShift) }
        }
        presentPUD = pud
        presentPMD = pmd
    }

    func count() throws(PlacementError) -> FaultPrediction {
        let firstTouch = try self.firstTouch()
        // Slots alike can be multiplied unless the older rule depends on a random first touch.
        let uniform: Bool
        if case .recorded = firstTouch { uniform = false } else { uniform = true }
        var tally = FaultTally()
        let specials = presentPUD.union(presentPMD.map { $0 >> (Self.pudShift - Self.pmdShift) })
        forEachSlot(first: start >> Self.pudShift, last: (end - 1) >> Self.pudShift, specials: specials, uniform: uniform, into: &tally) { slot, tally in
            pudSlot(slot, firstTouch: firstTouch, uniform: uniform, into: &tally)
        }
        return tally.prediction(accesses: order.accessCount)
    }

    /// Calls `body` for each slot in first...last, except that with `uniform` the interior
    /// slots not in `specials` are counted once and multiplied.
    private func forEachSlot(first: UInt64, last: UInt64, specials: Set<UInt64>, uniform: Bool, into tally: inout FaultTally,
                             _ body: (UInt64, inout FaultTally) -> Void) {
        guard uniform, last - first >= 2 else {
            var slot = first
            while true {
                body(slot, &tally)
                if slot == last { break }
                slot += 1
            }
            return
        }
        let singles = Set([first, last]).union(specials.filter { $0 >= first && $0 <= last })
        for slot in singles.sorted() { body(slot, &tally) }
        let alike = last - first + 1 - UInt64(singles.count)
        guard alike > 0 else { return }
        var representative = first + 1
        while singles.contains(representative) { representative += 1 }
        var one = FaultTally()
        body(representative, &one)
        tally.add(one, times: alike)
    }

    /// The part of [slotStart, slotStart + size) inside the mapping.
    private func clip(_ slotStart: UInt64, size: UInt64) -> (low: UInt64, high: UInt64) {
        let (slotEnd, overflow) = slotStart.addingReportingOverflow(size)
        return (max(slotStart, start), overflow ? end : min(slotEnd, end))
    }

    private func pudSlot(_ slot: UInt64, firstTouch: FirstTouch, uniform: Bool, into tally: inout FaultTally) {
        if attemptHuge(order: 18, slot: slot, present: presentPUD, fallbacks: 1, firstTouch: firstTouch, into: &tally) { return }
        let (low, high) = clip(slot << Self.pudShift, size: PageGeometry.bytes(order: 18))
        forEachSlot(first: low >> Self.pmdShift, last: (high - 1) >> Self.pmdShift, specials: presentPMD, uniform: uniform, into: &tally) { pmd, tally in
            pmdSlot(pmd, firstTouch: firstTouch, into: &tally)
        }
    }

    private func pmdSlot(_ slot: UInt64, firstTouch: FirstTouch, into tally: inout FaultTally) {
        // Under the per-VMA lock the PTE-level fault is retried under mmap_lock, and the PMD
        // entry is still empty then: a second attempt.
        let fallbacks: UInt64 = planner.model.retriesPTEFaultUnderMmapLock ? 2 : 1
        if attemptHuge(order: 9, slot: slot, present: presentPMD, fallbacks: fallbacks, firstTouch: firstTouch, into: &tally) { return }
        let (low, high) = clip(slot << Self.pmdShift, size: PageGeometry.bytes(order: 9))
        let pages = (high - low) >> UInt64(PageGeometry.pageShift)
        tally.call(0, .inserted, times: pages)
        tally.insert(0, times: pages)
    }

    /// The slot's first fault at this level: nothing when its table exists already or the order
    /// is not allowed; else one insert (true: the slot is mapped whole) or `fallbacks` calls.
    private func attemptHuge(order: Int, slot: UInt64, present: Set<UInt64>, fallbacks: UInt64, firstTouch: FirstTouch,
                             into tally: inout FaultTally) -> Bool {
        guard !present.contains(slot), planner.geometry.supports(order: order) else { return false }
        let slotStart = slot << (order == 18 ? Self.pudShift : Self.pmdShift)
        if huge(order: order, slotStart: slotStart, firstAtStart: firstAtStart(firstTouch, slot: slot, order: order)) {
            tally.call(order, .inserted)
            tally.insert(order)
            return true
        }
        tally.call(order, .fallback, times: fallbacks)
        return false
    }

    /// Whether the handler inserts a mapping of `order` for the slot's first fault.
    private func huge(order: Int, slotStart: UInt64, firstAtStart: Bool) -> Bool {
        switch planner.model.rule {
        case .alignedBlock:
            // Any address in the slot gives the same block.
            return planner.hugeBlock(order: order, faultingAt: max(slotStart, start)) != nil
        case .alignedAddress:
            return firstAtStart && planner.hugeBlock(order: order, faultingAt: slotStart) != nil
        }
    }

    private func firstAtStart(_ firstTouch: FirstTouch, slot: UInt64, order: Int) -> Bool {
        let shift = order == 18 ? Self.pudShift : Self.pmdShift
        let slotStart = slot << shift
        switch firstTouch {
        case .lowest:
            return slotStart >= start
        case .highest:
            return clip(slotStart, size: PageGeometry.bytes(order: order)).high - PageGeometry.pageSize == slotStart
        case let .recorded(pud, pmd):
            let index = Int(slot - (start >> shift))
            return order == 18 ? pud[index] : pmd[index]
        }
    }

    private func firstTouch() throws(PlacementError) -> FirstTouch {
        guard planner.model.rule == .alignedAddress else { return .lowest }   // unused by the fixed rule
        switch order.kind {
        case .linear: return .lowest
        case .reverse: return .highest
        case .list: return .lowest   // not counted by blocks
        case .permutation:
            let firstPUD = start >> Self.pudShift, firstPMD = start >> Self.pmdShift
            let pmdCount = ((end - 1) >> Self.pmdShift) - firstPMD + 1
            guard pmdCount <= Self.recordedSlotLimit else {
                throw .tooLarge(what: "a random order under the older fault rule", limit: "\(Self.recordedSlotLimit) slots of 2 MiB")
            }
            let pudCount = Int(((end - 1) >> Self.pudShift) - firstPUD + 1)
            // 0: not touched yet, 1: first touched elsewhere, 2: first touched at its first page.
            var pud = [UInt8](repeating: 0, count: pudCount), pmd = [UInt8](repeating: 0, count: Int(pmdCount))
            var left = pmdCount
            for page in order {
                let address = start + (page << UInt64(PageGeometry.pageShift))
                let pmdIndex = Int((address >> Self.pmdShift) - firstPMD)
                guard pmd[pmdIndex] == 0 else { continue }
                pmd[pmdIndex] = address & (PageGeometry.bytes(order: 9) - 1) == 0 ? 2 : 1
                let pudIndex = Int((address >> Self.pudShift) - firstPUD)
                if pud[pudIndex] == 0 { pud[pudIndex] = address & (PageGeometry.bytes(order: 18) - 1) == 0 ? 2 : 1 }
                left -= 1
                if left == 0 { break }
            }
            return .recorded(pud: pud.map { $0 == 2 }, pmd: pmd.map { $0 == 2 })
        }
    }
}
