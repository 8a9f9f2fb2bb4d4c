#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import SystemCalls
import SystemPackage
import TextFormat

/// Host memory a memslot may point into. The VM keeps a reference to it while a slot uses it,
/// so the memory cannot be unmapped under the guest.
public protocol MemslotBacking: AnyObject {
    /// Start of the host mapping.
    var hostAddress: UInt64 { get }
    /// Length of the host mapping in bytes.
    var size: Int { get }
}

extension GuestMemory: MemslotBacking {}

/// What KVM offers this VM (KVM_CHECK_EXTENSION on the VM fd, which can differ from /dev/kvm's).
public struct VMCapabilities: Sendable, Equatable {
    /// KVM_CAP_NR_MEMSLOTS: user memslots per address space.
    public var maxMemslots: Int
    /// KVM_CAP_MULTI_ADDRESS_SPACE (0 means 1; x86 SMM adds a second).
    public var addressSpaces: Int
    /// KVM_CAP_READONLY_MEM.
    public var readOnlyMemory: Bool
    /// KVM_CAP_DIRTY_LOG_RING: the largest ring in bytes; 0 when there is no dirty ring.
    public var dirtyRingMaxBytes: Int
    /// KVM_CAP_DIRTY_LOG_RING_ACQ_REL: the same, for the acquire/release flavour.
    public var dirtyRingAcquireReleaseMaxBytes: Int
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: the KVM_DIRTY_LOG_* flags accepted; 0 when absent.
    public var manualDirtyLogProtect: Int
    /// KVM_CAP_NR_VCPUS (recommended), KVM_CAP_MAX_VCPUS, KVM_CAP_MAX_VCPU_ID.
    public var recommendedVCPUs: Int
    /// Most vCPUs a VM may have.
    public var maxVCPUs: Int
    /// Highest vCPU id plus one.
    public var maxVCPUID: Int
}

/// How dirty guest pages are found. Chosen before the guest runs; see `VirtualMachine`.
public enum DirtyTrackingMode: Sendable, Equatable {
    /// KVM_GET_DIRTY_LOG per slot; with `manualProtect` (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)
    /// pages are write-protected again only by KVM_CLEAR_DIRTY_LOG, which collecting does.
    case bitmap(manualProtect: Bool)
    /// A ring of dirty gfns per vCPU (KVM_CAP_DIRTY_LOG_RING or _ACQ_REL).
    case ring(bytes: Int, acquireRelease: Bool)
}

/// Dirty pages found by one collection, as page indexes within each slot.
public struct DirtyPages: Sendable, Equatable {
    /// Page indexes relative to the slot's first page, ascending, no repeats.
    public var pages: [MemslotID: [UInt64]]
    /// Ring entries read (ring mode only; a page may appear in more than one entry).
    public var ringEntries: Int
    /// What KVM_RESET_DIRTY_RINGS reported (ring mode only).
    public var ringEntriesReset: Int

    /// Dirty pages as given (tests; `VirtualMachine.collectDirtyPages` makes them).
    public init(pages: [MemslotID: [UInt64]] = [:], ringEntries: Int = 0, ringEntriesReset: Int = 0) {
        self.pages = pages
        self.ringEntries = ringEntries
        self.ringEntriesReset = ringEntriesReset
    }
    /// Dirty pages over every slot.
    public var pageCount: Int { pages.values.reduce(0) { $0 + $1.count } }
}

/// A KVM virtual machine: its memslots, dirty tracking and vCPUs.
public final class VirtualMachine {
    let owned: OwnedFileDescriptor
    var fd: FileDescriptor { owned.borrowed }
    /// Kept so /dev/kvm (and its vCPU mmap size) outlives the VM.
    public let system: KVMSystem
    /// What this VM's KVM offers, read once at creation.
    public let capabilities: VMCapabilities
    /// The slots as KVM has them; every change is checked against it before the ioctl.
    public private(set) var memslots: MemslotTable
    /// How dirty pages are tracked: the bitmap (with or without manual protect) or the dirty ring.
    public private(set) var dirtyTracking: DirtyTrackingMode = .bitmap(manualProtect: false)
    /// vCPUs created so far (KVM cannot destroy one before the VM).
    public private(set) var vcpuCount = 0
    /// Memory each slot points into, so it stays mapped while KVM may access it.
    private var backings: [MemslotID: MemslotBacking] = [:]
    /// Each vCPU's ring, in creation order; collection harvests them all.
    var dirtyRings: [DirtyRing] = []

    /// Takes ownership of `fd` (which closes if a capability query fails).
    init(fd owned: consuming OwnedFileDescriptor, system: KVMSystem) throws(KVMError) {
        let fd = owned.borrowed
        func cap(_ c: KVMCapability) throws(KVMError) -> Int {
            Int(try ioctlValue(fd, CKVM_CHECK_EXTENSION, UInt(c.rawValue), "KVM_CHECK_EXTENSION \(c.name) on the VM"))
        }
        let caps = VMCapabilities(
            maxMemslots: try cap(.nrMemslots),
            addressSpaces: max(try cap(.multiAddressSpace), 1),
            readOnlyMemory: try cap(.readonlyMemory) > 0,
            dirtyRingMaxBytes: try cap(.dirtyLogRing),
            dirtyRingAcquireReleaseMaxBytes: try cap(.dirtyLogRingAcquireRelease),
            manualDirtyLogProtect: try cap(.manualDirtyLogProtect2),
            recommendedVCPUs: try cap(.nrVCPUs),
            maxVCPUs: try cap(.maxVCPUs),
            maxVCPUID: try cap(.maxVCPUID))
        self.capabilities = caps
        self.memslots = MemslotTable(
            slotsPerAddressSpace: caps.maxMemslots, addressSpaces: caps.addressSpaces,
            pageSize: UInt64(hostPageSize),
            allowedFlags: caps.readOnlyMemory ? [.logDirtyPages, .readOnly] : [.logDirtyPages])
        self.owned = owned
        self.system = system
    }

    // MARK: x86 set-up

    /// KVM_SET_IDENTITY_MAP_ADDR and KVM_SET_TSS_ADDR: Intel VMX needs one page for an identity
    /// page table and three for a TSS to run real-mode code; harmless elsewhere. Call before any
    /// vCPU exists. The defaults are QEMU's, just below the 4 GiB BIOS area.
    public func setX86RealModeAreas(tss: UInt64 = 0xfffb_d000, identityMap: UInt64 = 0xfffb_c000) throws(KVMError) {
        guard vcpuCount == 0 else { throw .invalidState("KVM_SET_IDENTITY_MAP_ADDR must come before the first vCPU") }
        var address = identityMap
        try ioctlStruct(fd, CKVM_SET_IDENTITY_MAP_ADDR, &address, "KVM_SET_IDENTITY_MAP_ADDR \(identityMap.hex())")
        try ioctlValue(fd, CKVM_SET_TSS_ADDR, UInt(tss), "KVM_SET_TSS_ADDR \(tss.hex())")
    }

    // MARK: vCPUs

    /// KVM_CREATE_VCPU. With a dirty ring on, also maps the vCPU's ring.
    public func createVCPU(id: UInt32? = nil) throws(KVMError) -> VirtualCPU {
        let number = id ?? UInt32(vcpuCount)
        let raw = try ioctlValue(fd, CKVM_CREATE_VCPU, UInt(number), "KVM_CREATE_VCPU \(number)")
        vcpuCount += 1
        return try VirtualCPU(fd: OwnedFileDescriptor(rawValue: raw), id: number, vm: self)
    }

    // MARK: Memslots

    /// Adds a slot at `guestPhysicalAddress` backed by `memory[offset ..< offset + size]`
    /// (all of it by default), in the lowest free slot number unless `id` names one. A
    /// `.deviceMemory` slot (a BAR) refuses dirty logging and a gpa that defeats huge pages;
    /// `memslots.freeDeviceAddress` offers one that does not.
    @discardableResult
    public func addSlot(_ id: MemslotID? = nil, guestPhysicalAddress: UInt64, memory: MemslotBacking,
                        offset: Int = 0, size: Int? = nil, flags: MemslotFlags = [],
                        kind: MemslotKind = .ram) throws(KVMError) -> Memslot {
        let length = size ?? (memory.size - offset)
        guard offset >= 0, length >= 0, offset <= memory.size, length <= memory.size - offset else {
            throw .invalidArgument("slot range \(offset)+\(length) lies outside its backing of \(memory.size) bytes")
        }
        guard let slotID = id ?? memslots.firstFreeSlot() else {
            throw .invalidState("all \(memslots.slotsPerAddressSpace) memslots are in use")
        }
        let slot = Memslot(id: slotID, guestPhysicalAddress: guestPhysicalAddress, size: UInt64(length),
                           userspaceAddress: memory.hostAddress &+ UInt64(offset), flags: flags, kind: kind)
        try setMemoryRegion(slot, backing: memory)
        return slot
    }

    /// KVM_SET_USER_MEMORY_REGION, checked against the table first. KVM decides from the
    /// region what it is: a new slot, a delete (size 0), a move (new gpa) or a flags change;
    /// `backing` is required for a new slot and must contain its host range.
    @discardableResult
    public func setMemoryRegion(_ slot: Memslot, backing: MemslotBacking? = nil) throws(KVMError) -> MemslotTable.Change {
        let change: MemslotTable.Change
        do { change = try memslots.classify(slot) } catch { throw .memslot(error) }
        if change == .add {
            guard let backing else { throw .invalidArgument("a new memslot needs the memory it points into") }
            let start = backing.hostAddress, end = start &+ UInt64(backing.size)
            guard slot.userspaceAddress >= start, slot.userspaceAddress <= end, slot.size <= end - slot.userspaceAddress else {
                throw .invalidArgument("memslot host range is outside its backing memory")
            }
        }
        if change == .none { return .none }
        try rawSetUserMemoryRegion(slot)
        // The kernel accepted it, so the table follows, without checking again what `classify`
        // already checked (this path is timed against raw ioctls in kvm-benchmark).
        memslots.applyClassified(change, slot)
        switch change {
        case .add: backings[slot.id] = backing
        case .delete: backings[slot.id] = nil
        case .move, .flags, .none: break
        }
        return change
    }

    /// Deletes a slot (KVM: the same slot with size 0).
    public func deleteSlot(_ id: MemslotID) throws(KVMError) {
        guard memslots[id] != nil else { throw .memslot(.noSuchSlot(id)) }
        try setMemoryRegion(Memslot(id: id, guestPhysicalAddress: 0, size: 0, userspaceAddress: 0))
    }

    /// Moves a slot to another guest-physical address; its memory and contents stay.
    public func moveSlot(_ id: MemslotID, to guestPhysicalAddress: UInt64) throws(KVMError) {
        let moved: Memslot
        do { moved = try memslots.validateMove(id, to: guestPhysicalAddress) } catch { throw .memslot(error) }
        try setMemoryRegion(moved)
    }

    /// Changes a slot's flags. Only LOG_DIRTY_PAGES can change on a live slot; READONLY needs
    /// delete and add, which is refused here with a message saying so.
    public func setFlags(_ id: MemslotID, _ flags: MemslotFlags) throws(KVMError) {
        let changed: Memslot
        do { changed = try memslots.validateSetFlags(id, flags) } catch { throw .memslot(error) }
        try setMemoryRegion(changed)
    }

    /// KVM_SET_USER_MEMORY_REGION as given, bypassing the table: for tests that ask the kernel
    /// itself about a region the table refuses. Leaves the table as it was.
    func rawSetUserMemoryRegion(_ slot: Memslot) throws(KVMError) {
        var region = kvm_userspace_memory_region(
            slot: slot.id.kernelValue, flags: slot.flags.rawValue, guest_phys_addr: slot.guestPhysicalAddress,
            memory_size: slot.size, userspace_addr: slot.userspaceAddress)
        try ioctlStruct(fd, CKVM_SET_USER_MEMORY_REGION, &region,
                        "KVM_SET_USER_MEMORY_REGION \(slot.id) gpa \(slot.guestPhysicalAddress.hex()) size \(slot.size.hex())")
    }

    // MARK: Dirty tracking

    /// KVM_ENABLE_CAP with one argument.
    func enableCapability(_ capability: KVMCapability, _ argument: UInt64) throws(KVMError) {
        var request = kvm_enable_cap()
        request.cap = UInt32(capability.rawValue)
        request.args.0 = argument
        try ioctlStruct(fd, CKVM_ENABLE_CAP, &request, "KVM_ENABLE_CAP \(capability.name) \(argument)")
    }

    /// Bitmap tracking where KVM_CLEAR_DIRTY_LOG, not KVM_GET_DIRTY_LOG, write-protects pages
    /// again (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2): collection gets, then clears what it got.
    /// `initiallySet` makes every page of a newly logged slot start dirty.
    public func enableManualDirtyLogProtect(initiallySet: Bool = false) throws(KVMError) {
        guard case .bitmap = dirtyTracking else {
            throw .invalidState("manual dirty-log protect is for bitmap tracking; this VM uses the dirty ring")
        }
        var flags = UInt64(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)
        if initiallySet { flags |= UInt64(KVM_DIRTY_LOG_INITIALLY_SET) }
        guard UInt64(capabilities.manualDirtyLogProtect) & flags == flags else {
            throw .missingCapability(name: KVMCapability.manualDirtyLogProtect2.name,
                                     detail: "it accepts flags \(capabilities.manualDirtyLogProtect.hex()), \(flags.hex()) needed")
        }
        try enableCapability(.manualDirtyLogProtect2, flags)
        dirtyTracking = .bitmap(manualProtect: true)
    }

    /// Checks a ring size as KVM will: a power of two, at least a page, at most the capability.
    /// (KVM also reserves entries for itself, so a one-page ring can still be refused, EINVAL.)
    public func validateDirtyRingSize(_ bytes: Int, acquireRelease: Bool) throws(KVMError) {
        let max = acquireRelease ? capabilities.dirtyRingAcquireReleaseMaxBytes : capabilities.dirtyRingMaxBytes
        guard max > 0 else {
            throw .missingCapability(name: acquireRelease ? KVMCapability.dirtyLogRingAcquireRelease.name : KVMCapability.dirtyLogRing.name,
                                     detail: "no dirty ring on this host; use bitmap tracking")
        }
        guard bytes > 0, bytes & (bytes - 1) == 0 else { throw .invalidDirtyRingSize(bytes: bytes, reason: "not a power of two") }
        guard bytes >= hostPageSize else {
            throw .invalidDirtyRingSize(bytes: bytes, reason: "smaller than a page (\(hostPageSize) bytes)")
        }
        guard bytes <= max else {
            throw .invalidDirtyRingSize(bytes: bytes, reason: "larger than this host's maximum of \(max) bytes")
        }
    }

    /// Per-vCPU dirty rings of `bytes` each. Must come before any vCPU exists, and replaces
    /// bitmap tracking (KVM_GET_DIRTY_LOG fails once the ring is on). Uses the acquire/release
    /// flavour when the host has it; entries are read and written that way regardless.
    public func enableDirtyRing(bytes: Int) throws(KVMError) {
        guard vcpuCount == 0 else { throw .invalidState("the dirty ring must be enabled before the first vCPU is created") }
        guard case .bitmap(manualProtect: false) = dirtyTracking else {
            throw .invalidState("dirty tracking is already set up (\(dirtyTracking)); choose ring or bitmap once")
        }
        let acquireRelease = capabilities.dirtyRingAcquireReleaseMaxBytes > 0
        try validateDirtyRingSize(bytes, acquireRelease: acquireRelease)
        try enableCapability(acquireRelease ? .dirtyLogRingAcquireRelease : .dirtyLogRing, UInt64(bytes))
        dirtyTracking = .ring(bytes: bytes, acquireRelease: acquireRelease)
    }

    /// Enables the smallest dirty ring of at least `minimumBytes` the kernel accepts, trying
    /// powers of two up to the host's maximum: KVM reserves entries of each ring for itself
    /// (64, plus the PML buffer's 512 on Intel), so it refuses (EINVAL) rings too small to hold
    /// them, a limit it does not report. Returns the size chosen.
    @discardableResult
    public func enableSmallestDirtyRing(minimumBytes: Int = 0) throws(KVMError) -> Int {
        let max = capabilities.dirtyRingAcquireReleaseMaxBytes > 0
            ? capabilities.dirtyRingAcquireReleaseMaxBytes : capabilities.dirtyRingMaxBytes
        var bytes = hostPageSize
        while bytes < minimumBytes { bytes *= 2 }
        var lastRefusal: KVMError?
        while bytes <= max {
            do {
                try enableDirtyRing(bytes: bytes)
                return bytes
            } catch let .system(operation, errno) where errno == .invalidArgument {
                lastRefusal = .system(operation: operation, errno: errno)
                bytes *= 2
            }
        }
        throw lastRefusal ?? .missingCapability(name: KVMCapability.dirtyLogRing.name,
                                                detail: "no ring of at least \(minimumBytes) bytes fits the maximum of \(max)")
    }

    /// Dirty pages since the last collection, by slot, in whichever mode is on. Only slots with
    /// LOG_DIRTY_PAGES are tracked. In ring mode every vCPU's ring is harvested and the entries
    /// handed back (KVM_RESET_DIRTY_RINGS), which write-protects those pages again.
    public func collectDirtyPages() throws(KVMError) -> DirtyPages {
        switch dirtyTracking {
        case let .bitmap(manualProtect):
            return try collectBitmaps(manualProtect: manualProtect)
        case .ring:
            var found: [MemslotID: [UInt64]] = [:]
            var entries = 0
            for ring in dirtyRings { entries += ring.harvest(into: &found) }
            let reset = entries == 0 ? 0 : Int(try ioctlValue(fd, CKVM_RESET_DIRTY_RINGS, 0, "KVM_RESET_DIRTY_RINGS"))
            // A page is in a ring at most once until reset, but may be in two vCPUs' rings.
            let pages = found.mapValues { list in
                let sorted = list.sorted()
                return sorted.enumerated().compactMap { index, page in index > 0 && sorted[index - 1] == page ? nil : page }
            }
            return DirtyPages(pages: pages, ringEntries: entries, ringEntriesReset: reset)
        }
    }

    private func collectBitmaps(manualProtect: Bool) throws(KVMError) -> DirtyPages {
        var result: [MemslotID: [UInt64]] = [:]
        for slot in memslots.allSlots where slot.flags.contains(.logDirtyPages) {
            let pages = slot.size / UInt64(hostPageSize)
            // KVM writes whole longs: ALIGN(npages, 64) / 8 bytes.
            var bitmap = [UInt64](repeating: 0, count: Int((pages + 63) / 64))
            // withUnsafeMutableBytes only rethrows untyped errors, hence the Result.
            try bitmap.withUnsafeMutableBytes { buffer in
                Result { () throws(KVMError) in
                    var log = kvm_dirty_log()
                    log.slot = slot.id.kernelValue
                    // Contract: `buffer` covers the whole bitmap KVM writes for this slot.
                    log.dirty_bitmap = buffer.baseAddress
                    try ioctlStruct(fd, CKVM_GET_DIRTY_LOG, &log, "KVM_GET_DIRTY_LOG \(slot.id)")
                }
            }.get()
            var dirty: [UInt64] = []
            for (wordIndex, word) in bitmap.enumerated() where word != 0 {
                var bits = word
                while bits != 0 {
                    dirty.append(UInt64(wordIndex) * 64 + UInt64(bits.trailingZeroBitCount))
                    bits &= bits - 1
                }
            }
            guard !dirty.isEmpty else { continue }
            if manualProtect {
                // Hand the same bits back: those pages are write-protected again from here on.
                try bitmap.withUnsafeMutableBytes { buffer in
                    Result { () throws(KVMError) in
                        var clear = kvm_clear_dirty_log()
                        clear.slot = slot.id.kernelValue
                        clear.first_page = 0
                        clear.num_pages = UInt32(truncatingIfNeeded: pages)
                        // Contract: `buffer` holds num_pages bits, rounded up to whole longs.
                        clear.dirty_bitmap = buffer.baseAddress
                        try ioctlStruct(fd, CKVM_CLEAR_DIRTY_LOG, &clear, "KVM_CLEAR_DIRTY_LOG \(slot.id)")
                    }
                }.get()
            }
            result[slot.id] = dirty
        }
        return DirtyPages(pages: result)
    }
}
