@testable import BARPlacement

// The page-by-page fault planner as it was before the block planner: the reference the block
// planner must equal. It walks every access with page-table arrays and a PTE bitmap (memory and
// time per page), so the tests keep it to small and medium mappings.

struct ReferencePlanner {
    let mapping: MappingGeometry
    let geometry: PageGeometry
    let model: KernelFaultModel
    /// Slots whose table exists before the first access: (level order 18 or 9, any address in
    /// the slot).
    let tablesPresent: [TableSlot]

    init(mapping: MappingGeometry, geometry: PageGeometry = .x86_64, model: KernelFaultModel = .linux612,
                tablesPresent: [TableSlot] = []) {
        self.mapping = mapping
        self.geometry = geometry
        self.model = model
        self.tablesPresent = tablesPresent
    }

    /// Runs the pattern and counts; `observe` (if given) sees every faulting access in order.
    func predict(_ pattern: AccessPattern, observe: ((FaultStep) -> Void)? = nil) throws -> FaultPrediction {
        var state = ReferenceWalkState(mapping: mapping)
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
    private func fault(page: UInt64, state: inout ReferenceWalkState, calls: inout [HandlerCall]) -> InstalledMapping? {
        let address = mapping.virtualStart + (page << UInt64(PageGeometry.pageShift))
        if state.isMapped(address) { return nil }
        if model.retriesPTEFaultUnderMmapLock {
            if let installed = walk(address, underVMALock: true, state: &state, calls: &calls) { return installed }
        }
        // Without the VMA-lock pass, or its retry under mmap_lock: always ends in a mapping.
        return walk(address, underVMALock: false, state: &state, calls: &calls)
    }

    /// One walk of __handle_mm_fault. Returns nil when it ends in VM_FAULT_RETRY.
    private func walk(_ address: UInt64, underVMALock: Bool, state: inout ReferenceWalkState, calls: inout [HandlerCall]) -> InstalledMapping? {
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
struct ReferenceWalkState {
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
