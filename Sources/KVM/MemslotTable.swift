import CLinuxUAPI
import PageAlignment
import TextFormat

/// A memslot's identity: KVM packs the address space into the top 16 bits of the slot number.
public struct MemslotID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The address space (0 normally; 1 is x86's SMM).
    public var addressSpace: UInt16
    /// The slot number within the address space.
    public var slot: UInt16
    /// Slot `slot` of `addressSpace`.
    public init(slot: UInt16, addressSpace: UInt16 = 0) {
        self.slot = slot
        self.addressSpace = addressSpace
    }
    /// The `slot` field of kvm_userspace_memory_region / kvm_dirty_log / kvm_dirty_gfn.
    public var kernelValue: UInt32 { UInt32(addressSpace) << 16 | UInt32(slot) }
    /// The id packed in a kernel `slot` field.
    public init(kernelValue: UInt32) {
        self.init(slot: UInt16(truncatingIfNeeded: kernelValue),
                  addressSpace: UInt16(truncatingIfNeeded: kernelValue >> 16))
    }
    /// Ordered as the kernel's packed value.
    public static func < (a: Self, b: Self) -> Bool { a.kernelValue < b.kernelValue }
    /// "slot N", or "slot AS:N" outside address space 0.
    public var description: String { addressSpace == 0 ? "slot \(slot)" : "slot \(addressSpace):\(slot)" }
}

/// kvm_userspace_memory_region flags this layer knows.
public struct MemslotFlags: OptionSet, Hashable, Sendable {
    /// The KVM_MEM_* bits.
    public let rawValue: UInt32
    /// Flags from their KVM_MEM_* bits.
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Track writes to the slot (dirty bitmap or dirty ring).
    public static let logDirtyPages = MemslotFlags(rawValue: UInt32(KVM_MEM_LOG_DIRTY_PAGES))
    /// Guest writes exit to userspace as MMIO instead of changing the memory.
    public static let readOnly = MemslotFlags(rawValue: UInt32(KVM_MEM_READONLY))
}

/// What a slot's host memory is. KVM itself does not know; the table uses it for rules that
/// only hold for one kind.
public enum MemslotKind: Sendable, Hashable {
    /// Guest RAM: ordinary host memory, whose guest writes KVM can log.
    case ram
    /// Device memory, such as a VFIO BAR mmap: the device changes it behind KVM's back, so a
    /// dirty log of it would be wrong, and huge mappings need gpa and host address congruent.
    case deviceMemory
}

/// One guest-physical range backed by host memory.
public struct Memslot: Hashable, Sendable {
    /// Which slot.
    public var id: MemslotID
    /// Where the guest sees it; page aligned.
    public var guestPhysicalAddress: UInt64
    /// Bytes; a whole number of pages.
    public var size: UInt64
    /// Where the backing is mapped in this process; page aligned.
    public var userspaceAddress: UInt64
    /// KVM_MEM_* flags (dirty logging, read-only).
    public var flags: MemslotFlags
    /// RAM or device memory (a BAR mapping), which decides what the slot may do.
    public var kind: MemslotKind

    /// A slot description; nothing is checked until a table takes it.
    public init(id: MemslotID, guestPhysicalAddress: UInt64, size: UInt64, userspaceAddress: UInt64,
                flags: MemslotFlags = [], kind: MemslotKind = .ram) {
        self.id = id
        self.guestPhysicalAddress = guestPhysicalAddress
        self.size = size
        self.userspaceAddress = userspaceAddress
        self.flags = flags
        self.kind = kind
    }

    /// The guest-physical range; only meaningful for a slot that passed validation (no overflow).
    public var guestRange: Range<UInt64> { guestPhysicalAddress..<(guestPhysicalAddress &+ size) }
}

/// Why the table refused a change. Each is a change KVM itself would refuse (errno noted), so
/// refusing it first gives a clear message instead of a bare EINVAL or EEXIST.
public enum MemslotError: Error, Hashable, Sendable, CustomStringConvertible {
    /// gpa, size or host address is not page aligned (kernel: EINVAL).
    case misaligned(MemslotID, field: String, value: UInt64, pageSize: UInt64)
    /// A new slot must have a size; KVM reads size 0 as "delete" (kernel: EINVAL).
    case emptySlot(MemslotID)
    /// gpa + size or host address + size wraps around (kernel: EINVAL).
    case addressOverflow(MemslotID)
    /// Slot number or address space beyond what the VM has (kernel: EINVAL).
    case slotOutOfRange(MemslotID, slotsPerAddressSpace: Int, addressSpaces: Int)
    /// Adding a slot whose number is in use (KVM would read it as a change to that slot).
    case slotInUse(MemslotID)
    /// No such slot (kernel: EINVAL when deleting it).
    case noSuchSlot(MemslotID)
    /// The guest range overlaps another slot in the same address space (kernel: EEXIST).
    case overlap(MemslotID, with: MemslotID, range: Range<UInt64>)
    /// Flags KVM does not accept, or read-only memory the host lacks (kernel: EINVAL).
    case unsupportedFlags(MemslotID, flags: UInt32)
    /// READONLY cannot change on a live slot: delete it and add it again (kernel: EINVAL).
    case readOnlyChange(MemslotID)
    /// Size or host address cannot change on a live slot: delete and add (kernel: EINVAL).
    case immutableChange(MemslotID, field: String)
    /// Dirty logging asked for on device memory. KVM would accept it, but it logs only writes by
    /// vCPUs, never the device's own, so the log would silently miss changes.
    case dirtyLoggingOnDeviceMemory(MemslotID)
    /// Device memory whose gpa is not congruent to its host address modulo a huge page size the
    /// host range can hold: KVM could then only map it with 4 KiB pages (tens of times slower
    /// to fault in). `suggested` is the nearest congruent gpa at or above the one asked for.
    case hugePageIncongruent(MemslotID, pageSize: UInt64, guestPhysicalAddress: UInt64, hostAddress: UInt64, suggested: UInt64?)

    /// What KVM would refuse, with the slots and numbers involved.
    public var description: String {
        switch self {
        case let .misaligned(id, field, value, pageSize):
            return "memslot \(id.description): \(field) \(value.hex()) is not a multiple of the page size \(pageSize.hex())"
        case let .emptySlot(id):
            return "memslot \(id.description) has size 0 (KVM reads size 0 as delete)"
        case let .addressOverflow(id):
            return "memslot \(id.description): address + size wraps past 2^64"
        case let .slotOutOfRange(id, perSpace, spaces):
            return "memslot \(id.description) is out of range: this VM has slots 0..<\(perSpace) in \(spaces) address space(s)"
        case let .slotInUse(id):
            return "memslot \(id.description) is already in use; delete it first, or use move/setFlags"
        case let .noSuchSlot(id):
            return "memslot \(id.description) does not exist"
        case let .overlap(id, other, range):
            return "memslot \(id.description) at \(range.lowerBound.hex())..<\(range.upperBound.hex()) overlaps \(other.description)"
        case let .unsupportedFlags(id, flags):
            return "memslot \(id.description): flags \(UInt64(flags).hex()) are not supported here"
        case let .readOnlyChange(id):
            return "memslot \(id.description): READONLY cannot change on a live slot; delete and add it again"
        case let .immutableChange(id, field):
            return "memslot \(id.description): \(field) cannot change on a live slot; delete and add it again"
        case let .dirtyLoggingOnDeviceMemory(id):
            return "memslot \(id.description) is device memory: dirty logging is refused, as KVM cannot see the device's own writes"
        case let .hugePageIncongruent(id, pageSize, gpa, host, suggested):
            let hint = suggested.map { "; use gpa \($0.hex())" } ?? ""
            return "memslot \(id.description): gpa \(gpa.hex()) and host address \(host.hex()) differ modulo \(pageSize.hex()), so huge pages cannot map it\(hint)"
        }
    }
}

/// The VM's memslots as KVM has them, kept in userspace so every change can be checked against
/// KVM's rules before the ioctl. Pure: no file descriptors, no memory. Slots are never merged:
/// adjacent slots stay separate, each with its own id.
public struct MemslotTable: Sendable, Equatable {
    /// Slot numbers available in each address space (KVM_CAP_NR_MEMSLOTS).
    public let slotsPerAddressSpace: Int
    /// Address spaces (KVM_CAP_MULTI_ADDRESS_SPACE).
    public let addressSpaces: Int
    /// The host's base page size: slot addresses and sizes are multiples of it.
    public let pageSize: UInt64
    /// Flags the kernel accepts (READONLY only where KVM_CAP_READONLY_MEM says so).
    public let allowedFlags: MemslotFlags
    /// Huge page sizes device-memory slots must be congruent for (see `HugePages`).
    public let hugePageSizes: [UInt64]
    private var slots: [MemslotID: Memslot] = [:]
    /// Guest ranges by address, per address space: overlap checks and lookups in O(log n), so a
    /// table of 32764 slots costs little next to the ioctl.
    private var ranges: [UInt16: GuestRangeIndex] = [:]

    /// An empty table with the host's limits.
    public init(slotsPerAddressSpace: Int, addressSpaces: Int = 1, pageSize: UInt64 = BasePage.size,
                allowedFlags: MemslotFlags = [.logDirtyPages, .readOnly],
                hugePageSizes: [UInt64] = HugePages.x86Sizes) {
        self.slotsPerAddressSpace = slotsPerAddressSpace
        self.addressSpaces = max(addressSpaces, 1)
        self.pageSize = pageSize
        self.allowedFlags = allowedFlags
        self.hugePageSizes = hugePageSizes
    }

    /// Slots in the table.
    public var count: Int { slots.count }
    /// Whether the table has no slot.
    public var isEmpty: Bool { slots.isEmpty }
    /// The slot with this id, if any.
    public subscript(id: MemslotID) -> Memslot? { slots[id] }

    /// All slots of one address space, by guest-physical address.
    public func slots(inAddressSpace space: UInt16 = 0) -> [Memslot] {
        slots.values.filter { $0.id.addressSpace == space }.sorted { $0.guestPhysicalAddress < $1.guestPhysicalAddress }
    }
    /// Every slot, by id.
    public var allSlots: [Memslot] { slots.values.sorted { $0.id < $1.id } }

    /// The slot holding `address` in `space`, if any.
    public func lookup(guestPhysicalAddress address: UInt64, addressSpace space: UInt16 = 0) -> Memslot? {
        guard let id = ranges[space]?.overlap(with: address..<(address &+ 1), excluding: nil) else { return nil }
        return slots[id]
    }

    /// The lowest gpa in `range` where a device-memory slot of `size` bytes at host address
    /// `hostAddress` fits without overlapping a slot and satisfies the huge-page rule; nil if
    /// there is none.
    public func freeDeviceAddress(size: UInt64, hostAddress: UInt64, in range: Range<UInt64>,
                                  addressSpace space: UInt16 = 0) -> UInt64? {
        let modulus = HugePages.requiredCongruence(hostAddress: hostAddress, size: size, pageSizes: hugePageSizes) ?? pageSize
        return AddressAlignment.lowestFree(span: size, modulus: modulus, residue: hostAddress, window: range) { candidate in
            ranges[space]?.overlap(with: candidate, excluding: nil).flatMap { slots[$0]?.guestRange.upperBound }
        }
    }

    /// The lowest free slot number in `space`.
    public func firstFreeSlot(addressSpace space: UInt16 = 0) -> MemslotID? {
        let used = Set(slots.keys.filter { $0.addressSpace == space }.map(\.slot))
        for number in 0..<min(slotsPerAddressSpace, Int(UInt16.max) + 1) where !used.contains(UInt16(number)) {
            return MemslotID(slot: UInt16(number), addressSpace: space)
        }
        return nil
    }

    // MARK: Checks (what the kernel would refuse)

    /// Checks a new slot without adding it.
    public func validateAdd(_ slot: Memslot) throws(MemslotError) {
        try checkID(slot.id)
        guard slots[slot.id] == nil else { throw .slotInUse(slot.id) }
        try checkShape(slot)
        try checkNoOverlap(slot.id, slot.guestRange)
    }

    /// Checks moving an existing slot to another gpa, without doing it; returns the moved slot.
    public func validateMove(_ id: MemslotID, to address: UInt64) throws(MemslotError) -> Memslot {
        guard var slot = slots[id] else { throw .noSuchSlot(id) }
        slot.guestPhysicalAddress = address
        try checkShape(slot)
        try checkNoOverlap(id, slot.guestRange)
        return slot
    }

    /// Checks a flags change on an existing slot: only LOG_DIRTY_PAGES may change in place.
    public func validateSetFlags(_ id: MemslotID, _ flags: MemslotFlags) throws(MemslotError) -> Memslot {
        guard var slot = slots[id] else { throw .noSuchSlot(id) }
        guard allowedFlags.isSuperset(of: flags) else { throw .unsupportedFlags(id, flags: flags.rawValue) }
        guard slot.flags.contains(.readOnly) == flags.contains(.readOnly) else { throw .readOnlyChange(id) }
        slot.flags = flags
        try checkKindRules(slot)
        return slot
    }

    /// What a kvm_userspace_memory_region call does to the table.
    public enum Change: Sendable, Equatable { case add, delete, move, flags, none }

    /// Classifies a full kvm_userspace_memory_region as KVM would (a new slot, a delete by size 0,
    /// a move, a flags change, or nothing), refusing what KVM would refuse.
    public func classify(_ slot: Memslot) throws(MemslotError) -> Change {
        try checkID(slot.id)
        guard let old = slots[slot.id] else {
            if slot.size == 0 { throw .noSuchSlot(slot.id) }
            try validateAdd(slot)
            return .add
        }
        if slot.size == 0 { return .delete }
        try checkShape(slot)
        guard slot.size == old.size else { throw .immutableChange(slot.id, field: "size") }
        guard slot.userspaceAddress == old.userspaceAddress else { throw .immutableChange(slot.id, field: "host address") }
        guard slot.kind == old.kind else { throw .immutableChange(slot.id, field: "kind") }
        guard slot.flags.contains(.readOnly) == old.flags.contains(.readOnly) else { throw .readOnlyChange(slot.id) }
        if slot.guestPhysicalAddress != old.guestPhysicalAddress {
            try checkNoOverlap(slot.id, slot.guestRange)
            return .move
        }
        return slot.flags == old.flags ? .none : .flags
    }

    // MARK: Changes

    /// Adds a new slot; throws (and changes nothing) when KVM would refuse it: a used id, an overlap, bad alignment, flags not allowed.
    public mutating func add(_ slot: Memslot) throws(MemslotError) {
        try validateAdd(slot)
        slots[slot.id] = slot
        ranges[slot.id.addressSpace, default: GuestRangeIndex()].insert(slot.guestRange, id: slot.id)
    }

    /// Removes a slot and returns it; throws `.noSuchSlot` when it is absent.
    @discardableResult
    public mutating func remove(_ id: MemslotID) throws(MemslotError) -> Memslot {
        guard let old = slots.removeValue(forKey: id) else { throw .noSuchSlot(id) }
        ranges[id.addressSpace]?.remove(start: old.guestPhysicalAddress, id: id)
        return old
    }

    /// Moves a slot to another guest address, keeping its size and backing; throws when the new range overlaps or is misaligned.
    @discardableResult
    public mutating func move(_ id: MemslotID, to address: UInt64) throws(MemslotError) -> Memslot {
        let moved = try validateMove(id, to: address)
        if let old = slots[id] { ranges[id.addressSpace]?.remove(start: old.guestPhysicalAddress, id: id) }
        slots[id] = moved
        ranges[id.addressSpace, default: GuestRangeIndex()].insert(moved.guestRange, id: id)
        return moved
    }

    /// Changes a slot's flags (dirty logging on or off); throws when KVM would refuse the change.
    @discardableResult
    public mutating func setFlags(_ id: MemslotID, _ flags: MemslotFlags) throws(MemslotError) -> Memslot {
        let changed = try validateSetFlags(id, flags)
        slots[id] = changed
        return changed
    }

    /// Applies a change `classify(slot)` returned for `slot`, without checking it again.
    mutating func applyClassified(_ change: Change, _ slot: Memslot) {
        switch change {
        case .add:
            slots[slot.id] = slot
            ranges[slot.id.addressSpace, default: GuestRangeIndex()].insert(slot.guestRange, id: slot.id)
        case .delete:
            _ = try? remove(slot.id)
        case .move:
            if let old = slots[slot.id] { ranges[slot.id.addressSpace]?.remove(start: old.guestPhysicalAddress, id: slot.id) }
            slots[slot.id] = slot
            ranges[slot.id.addressSpace, default: GuestRangeIndex()].insert(slot.guestRange, id: slot.id)
        case .flags:
            slots[slot.id]?.flags = slot.flags
        case .none:
            break
        }
    }

    // MARK: Private

    private func checkID(_ id: MemslotID) throws(MemslotError) {
        guard Int(id.slot) < slotsPerAddressSpace, Int(id.addressSpace) < addressSpaces else {
            throw .slotOutOfRange(id, slotsPerAddressSpace: slotsPerAddressSpace, addressSpaces: addressSpaces)
        }
    }

    /// Flags, alignment, size and overflow, in the order KVM checks them (all EINVAL there).
    private func checkShape(_ slot: Memslot) throws(MemslotError) {
        guard allowedFlags.isSuperset(of: slot.flags) else { throw .unsupportedFlags(slot.id, flags: slot.flags.rawValue) }
        let mask = pageSize - 1
        guard slot.size & mask == 0 else { throw .misaligned(slot.id, field: "size", value: slot.size, pageSize: pageSize) }
        guard slot.guestPhysicalAddress & mask == 0 else {
            throw .misaligned(slot.id, field: "guest physical address", value: slot.guestPhysicalAddress, pageSize: pageSize)
        }
        guard slot.userspaceAddress & mask == 0 else {
            throw .misaligned(slot.id, field: "host address", value: slot.userspaceAddress, pageSize: pageSize)
        }
        guard slot.size > 0 else { throw .emptySlot(slot.id) }
        guard !slot.guestPhysicalAddress.addingReportingOverflow(slot.size).overflow,
              !slot.userspaceAddress.addingReportingOverflow(slot.size).overflow else {
            throw .addressOverflow(slot.id)
        }
        try checkKindRules(slot)
    }

    /// Rules for device memory, which KVM does not know about (see `MemslotKind`).
    private func checkKindRules(_ slot: Memslot) throws(MemslotError) {
        guard slot.kind == .deviceMemory else { return }
        guard !slot.flags.contains(.logDirtyPages) else { throw .dirtyLoggingOnDeviceMemory(slot.id) }
        if let hugePage = HugePages.requiredCongruence(hostAddress: slot.userspaceAddress, size: slot.size, pageSizes: hugePageSizes),
           !HugePages.isCongruent(slot.guestPhysicalAddress, slot.userspaceAddress, modulo: hugePage) {
            throw .hugePageIncongruent(
                slot.id, pageSize: hugePage, guestPhysicalAddress: slot.guestPhysicalAddress, hostAddress: slot.userspaceAddress,
                suggested: HugePages.congruentGuestAddress(hostAddress: slot.userspaceAddress, size: slot.size,
                                                           atOrAbove: slot.guestPhysicalAddress, pageSizes: hugePageSizes,
                                                           basePageSize: pageSize))
        }
    }

    private func checkNoOverlap(_ id: MemslotID, _ range: Range<UInt64>) throws(MemslotError) {
        if let other = ranges[id.addressSpace]?.overlap(with: range, excluding: id) {
            throw .overlap(id, with: other, range: range)
        }
    }

    /// Equal when limits and slots are; the range index's internal chunking does not count.
    public static func == (a: Self, b: Self) -> Bool {
        // The range index is derived from `slots`; its chunking depends on history, not content.
        a.slotsPerAddressSpace == b.slotsPerAddressSpace && a.addressSpaces == b.addressSpaces && a.pageSize == b.pageSize
            && a.allowedFlags == b.allowedFlags && a.hugePageSizes == b.hugePageSizes && a.slots == b.slots
    }
}

/// Chooses the number of a VM's next memslot. A VMM keeps one and hands it to every part that
/// adds slots (Cloud Hypervisor's memory manager hands its allocator to each VFIO device), so
/// two parts never pick the same number by each counting on its own.
public protocol MemslotAllocator {
    /// The id for a new slot in `table` (in address space 0); nil when every number within the
    /// table's limit is taken. The caller adds the slot before asking again.
    func nextSlot(in table: MemslotTable) -> MemslotID?
}

/// KVM's own rule (`MemslotTable.firstFreeSlot`): the lowest number not in use, below the VM's
/// KVM_CAP_NR_MEMSLOTS, so numbers freed by deleted slots are used again.
public struct LowestFreeMemslot: MemslotAllocator {
    /// The allocator.
    public init() {}

    /// The lowest free slot number in address space 0, or nil when the VM's limit is reached.
    public func nextSlot(in table: MemslotTable) -> MemslotID? { table.firstFreeSlot() }
}
