import KVM
import VFIO

/// Reads and writes a device region at an offset: the path guest MMIO exits take while a BAR's
/// memslot is absent (QEMU's x-no-mmap path: pread/pwrite at the region's offset in the VFIO
/// device file). Tests supply closures over a fake BAR.
public struct RegionAccess {
    /// Reads `width` bytes at `offset` in region `region`.
    public var read: (_ region: UInt32, _ offset: UInt64, _ width: AccessWidth) throws(PassthroughError) -> UInt64
    /// Writes the low `width` bytes of `value` at `offset` in region `region`.
    public var write: (_ value: UInt64, _ region: UInt32, _ offset: UInt64, _ width: AccessWidth) throws(PassthroughError) -> Void

    /// Access through the given closures (a fake BAR in tests).
    public init(read: @escaping (UInt32, UInt64, AccessWidth) throws(PassthroughError) -> UInt64,
                write: @escaping (UInt64, UInt32, UInt64, AccessWidth) throws(PassthroughError) -> Void) {
        self.read = read
        self.write = write
    }

    /// Region reads and writes through the VFIO device (one pread or pwrite each). The regions'
    /// info is fetched once per region and kept.
    public static func vfio(_ device: VFIODevice) -> RegionAccess {
        let cache = RegionInfoCache(device: device)
        return RegionAccess(
            read: { (region, offset, width) throws(PassthroughError) in
                try viaVFIO { () throws(VFIOError) in try device.read(try cache.info(region), offset: offset, width: width) }
            },
            write: { (value, region, offset, width) throws(PassthroughError) in
                try viaVFIO { () throws(VFIOError) in try device.write(value, to: try cache.info(region), offset: offset, width: width) }
            })
    }
}

/// VFIO_DEVICE_GET_REGION_INFO answers, asked once per region.
private final class RegionInfoCache {
    let device: VFIODevice
    var infos: [UInt32: RegionInfo] = [:]
    init(device: VFIODevice) { self.device = device }
    func info(_ index: UInt32) throws(VFIOError) -> RegionInfo {
        if let known = infos[index] { return known }
        let fresh = try device.regionInfo(index)
        infos[index] = fresh
        return fresh
    }
}

/// One BAR's host memory: the region and the mappings of its mmap-able areas. The mappings are
/// `MemslotBacking`s (a `VFIOAreaMapping`, or shared memory standing in for one in tests).
public struct BARMemory {
    /// The BAR number (0-5).
    public var bar: Int
    /// Its VFIO region index.
    public var regionIndex: UInt32
    /// The whole region's size (the guest sees all of it).
    public var regionSize: UInt64
    /// (offset in the region, the mapping of the area that starts there).
    public var areas: [(offset: UInt64, memory: MemslotBacking)]
    /// A BAR and the mappings of its areas.
    public init(bar: Int, regionIndex: UInt32, regionSize: UInt64, areas: [(offset: UInt64, memory: MemslotBacking)]) {
        self.bar = bar
        self.regionIndex = regionIndex
        self.regionSize = regionSize
        self.areas = areas
    }

    /// What the placement planner needs of this BAR.
    public var request: BARRequest {
        BARRequest(bar: bar, regionIndex: regionIndex, regionSize: regionSize,
                   areas: areas.map { HostArea(offset: $0.offset, size: UInt64($0.memory.size), hostAddress: $0.memory.hostAddress) })
    }
}

/// A device's BARs in one VM: each mmap-able area is a `.deviceMemory` memslot at the gpa
/// `GuestPlacement` chose, so guest accesses go straight to the device; `setPresent(false)`
/// deletes the slots, after which the same accesses exit as MMIO and `serve` answers them with
/// region reads and writes. The guest sees the same values either way.
///
/// Ownership (why a slot never outlives its mmap): every area's mapping is held here (through
/// its `SlotToggle`) and by the VM for as long as its slot exists, so the mapping cannot be
/// unmapped while KVM may still translate guest accesses through it. `detach()` deletes the
/// slots; only after that, and once this object and the VM let go, is the mapping released
/// (a `VFIOAreaMapping` unmaps in its deinit). deinit detaches too.
///
/// Not thread-safe: one thread at a time toggles and serves (KVM itself takes slot changes
/// while vCPUs run; see `SlotToggle`).
public final class BARMemslots {
    /// The VM the slots are in (held).
    public let vm: VirtualMachine
    /// Where each BAR and its areas are in the guest.
    public let bars: [PlacedBar]
    /// Finds the BAR behind an MMIO exit.
    public let router: MMIORouter
    /// One per area, in BAR then offset order.
    public let toggles: [SlotToggle]
    let regions: RegionAccess
    /// MMIO exits answered by `serve`, since creation.
    public private(set) var servedReads = 0
    /// MMIO write exits answered by `serve`, since creation.
    public private(set) var servedWrites = 0

    /// Places the BARs (see `GuestPlacement`) and adds one slot per area, each numbered by
    /// `allocator` (the VMM's one). Slots added before a failure are deleted again.
    public init(vm: VirtualMachine, bars: [BARMemory], window: Range<UInt64>, reserved: [Range<UInt64>] = [],
                allocator: any MemslotAllocator = LowestFreeMemslot(), regions: RegionAccess) throws(PassthroughError) {
        let placed = try GuestPlacement.place(bars.map(\.request), in: window, reserved: reserved,
                                              pageSizes: vm.memslots.hugePageSizes, basePageSize: vm.memslots.pageSize)
        var toggles: [SlotToggle] = []
        do throws(PassthroughError) {
            for placedBar in placed {
                guard let memory = bars.first(where: { $0.bar == placedBar.bar }) else { continue }
                for area in memory.areas.sorted(by: { $0.offset < $1.offset }) {
                    let gpa = placedBar.guestPhysicalAddress + area.offset
                    let slot = Memslot(id: try PassthroughVM.allocate(allocator, in: vm.memslots), guestPhysicalAddress: gpa, size: UInt64(area.memory.size),
                                       userspaceAddress: area.memory.hostAddress, kind: .deviceMemory)
                    toggles.append(try viaKVM { () throws(KVMError) in try SlotToggle(vm: vm, slot: slot, backing: area.memory) })
                }
            }
        } catch {
            for toggle in toggles.reversed() { try? toggle.setPresent(false) }
            throw error
        }
        self.vm = vm
        self.bars = placed
        self.router = MMIORouter(placed)
        self.toggles = toggles
        self.regions = regions
    }

    deinit { try? detach() }

    /// Whether the slots are in the VM (all of them; they change together).
    public var isPresent: Bool { toggles.allSatisfy(\.isPresent) }

    /// Adds or deletes every area's slot.
    public func setPresent(_ present: Bool) throws(PassthroughError) {
        for toggle in toggles { try viaKVM { () throws(KVMError) in try toggle.setPresent(present) } }
    }

    /// Deletes every slot: call before letting the mappings go (deinit does it too).
    public func detach() throws(PassthroughError) { try setPresent(false) }

    /// The guest-physical address of `offset` bytes into `bar`, or nil if the BAR is not placed
    /// or the offset is outside its region.
    public func guestPhysicalAddress(bar: Int, offset: UInt64) -> UInt64? {
        guard let placed = bars.first(where: { $0.bar == bar }), offset < placed.regionSize else { return nil }
        return placed.guestPhysicalAddress + offset
    }

    /// Serves an MMIO exit that falls in a BAR, with a region read (its value handed to the vCPU
    /// for the next run) or write. Returns false for any other exit, so the caller can handle it.
    public func serve(_ exit: VMExit, on vcpu: VirtualCPU) throws(PassthroughError) -> Bool {
        guard case let .mmio(address, isWrite, length, data) = exit else { return false }
        guard let route = router.route(guestPhysicalAddress: address, length: length),
              let width = AccessWidth(rawValue: length) else {
            throw .unroutedMMIO(address: address, length: length, isWrite: isWrite)
        }
        if isWrite {
            var value: UInt64 = 0
            for (index, byte) in data.prefix(length).enumerated() { value |= UInt64(byte) << (8 * UInt64(index)) }
            try regions.write(value, route.regionIndex, route.regionOffset, width)
            servedWrites += 1
        } else {
            let value = try regions.read(route.regionIndex, route.regionOffset, width)
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
            try viaKVM { () throws(KVMError) in try vcpu.provideInput(bytes) }
            servedReads += 1
        }
        return true
    }
}
