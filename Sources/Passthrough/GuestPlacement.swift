import KVM
import PageAlignment
import TextFormat

/// One mmap-able area of a BAR as the host mapped it: where it starts in the BAR, its length,
/// and the host address of its mapping (the memslot's userspace address).
public struct HostArea: Sendable, Hashable {
    /// Where the area starts in the BAR.
    public var offset: UInt64
    /// Its length in bytes.
    public var size: UInt64
    /// The host address of its mapping.
    public var hostAddress: UInt64
    /// An area as described.
    public init(offset: UInt64, size: UInt64, hostAddress: UInt64) {
        self.offset = offset
        self.size = size
        self.hostAddress = hostAddress
    }
}

/// What the placement planner needs to know of one BAR: the whole region (the guest sees all
/// of it; parts that are not mapped exit as MMIO) and its mapped areas.
public struct BARRequest: Sendable, Hashable {
    /// The BAR number (0-5).
    public var bar: Int
    /// The VFIO region index (BARn is region n on vfio-pci).
    public var regionIndex: UInt32
    /// The whole region's size.
    public var regionSize: UInt64
    /// Its mapped areas.
    public var areas: [HostArea]
    /// A request as described.
    public init(bar: Int, regionIndex: UInt32, regionSize: UInt64, areas: [HostArea]) {
        self.bar = bar
        self.regionIndex = regionIndex
        self.regionSize = regionSize
        self.areas = areas
    }
}

/// A mapped area with its place in the guest.
public struct PlacedArea: Sendable, Hashable {
    /// Where the area starts in the BAR.
    public var offset: UInt64
    /// Its length in bytes.
    public var size: UInt64
    /// The host address of its mapping (the memslot's userspace address).
    public var hostAddress: UInt64
    /// Its guest-physical address: the BAR's base plus `offset`.
    public var guestPhysicalAddress: UInt64
    /// The huge page size gpa and host address are congruent modulo (nil: no huge page fits the
    /// area, so only 4 KiB alignment matters).
    public var hugePageCongruence: UInt64?
}

/// A BAR with its place in the guest: the region starts at `guestPhysicalAddress`, each area
/// at that plus its offset.
public struct PlacedBar: Sendable, Hashable {
    /// The BAR number (0-5).
    public var bar: Int
    /// Its VFIO region index.
    public var regionIndex: UInt32
    /// The whole region's size.
    public var regionSize: UInt64
    /// The BAR's base in the guest.
    public var guestPhysicalAddress: UInt64
    /// Its mapped areas, each at the base plus its offset.
    public var areas: [PlacedArea]
    /// The guest range the BAR occupies: the region rounded up to whole pages.
    public var guestRange: Range<UInt64>
}

/// Where a device's BARs go in guest-physical memory. Pure: no descriptors, no kernel.
///
/// Each BAR is placed whole, so the guest sees the region's layout (mapped areas at their
/// offsets, the rest served as MMIO). Its base is chosen so that every area's gpa is congruent
/// to the area's host address modulo the largest huge page the area holds (KVM maps a range
/// huge only where gpa and host address line up, see `HugePages`). BARs are placed one at a
/// time, the most constrained first (largest congruence, then largest, then lowest BAR number),
/// each at the lowest address of the window that is free and congruent.
public enum GuestPlacement {
    /// The placement order (see the type's comment); exposed for tests.
    public static func order(_ requests: [BARRequest], pageSizes: [UInt64] = HugePages.x86Sizes,
                             basePageSize: UInt64 = BasePage.size) throws(PassthroughError) -> [BARRequest] {
        var keyed: [(request: BARRequest, modulus: UInt64)] = []
        for request in requests {
            let constraint = try baseConstraint(request, pageSizes: pageSizes, basePageSize: basePageSize)
            keyed.append((request, constraint.modulus))
        }
        return keyed.sorted { a, b in
            if a.modulus != b.modulus { return a.modulus > b.modulus }
            if a.request.regionSize != b.request.regionSize { return a.request.regionSize > b.request.regionSize }
            return a.request.bar < b.request.bar
        }.map(\.request)
    }

    /// Places every BAR inside `window`, clear of `reserved` ranges (guest RAM, firmware areas)
    /// and of each other. Returns them in BAR order.
    public static func place(_ requests: [BARRequest], in window: Range<UInt64>, reserved: [Range<UInt64>] = [],
                             pageSizes: [UInt64] = HugePages.x86Sizes,
                             basePageSize: UInt64 = BasePage.size) throws(PassthroughError) -> [PlacedBar] {
        var seen = Set<Int>()
        for request in requests where !seen.insert(request.bar).inserted {
            throw .invalidBar(bar: request.bar, reason: "requested twice")
        }
        var taken = reserved.filter { !$0.isEmpty }
        var placed: [PlacedBar] = []
        for request in try order(requests, pageSizes: pageSizes, basePageSize: basePageSize) {
            let constraint = try baseConstraint(request, pageSizes: pageSizes, basePageSize: basePageSize)
            // baseConstraint checked that the region size rounds up without overflow.
            let span = AddressAlignment.roundUp(request.regionSize, to: basePageSize) ?? request.regionSize
            guard let base = AddressAlignment.lowestFree(span: span, modulus: constraint.modulus, residue: constraint.residue,
                                                         window: window, taken: taken) else {
                throw .noRoom(bar: request.bar, size: request.regionSize, window: window)
            }
            let areas = request.areas.map { area in
                PlacedArea(offset: area.offset, size: area.size, hostAddress: area.hostAddress,
                           guestPhysicalAddress: base + area.offset,
                           hugePageCongruence: HugePages.requiredCongruence(hostAddress: area.hostAddress, size: area.size,
                                                                            pageSizes: pageSizes))
            }
            placed.append(PlacedBar(bar: request.bar, regionIndex: request.regionIndex, regionSize: request.regionSize,
                                    guestPhysicalAddress: base, areas: areas, guestRange: base..<(base + span)))
            taken.append(base..<(base + span))
        }
        return placed.sorted { $0.bar < $1.bar }
    }

    /// The BAR base must be ≡ `residue` modulo `modulus` (a power of two, at least a page).
    struct BaseConstraint: Equatable {
        var modulus: UInt64
        var residue: UInt64
    }

    /// Checks the request and combines its areas' congruences into one for the BAR's base:
    /// area at offset o with host address h, needing page p, wants base ≡ h - o (mod p).
    /// Moduli are powers of two, so the largest one decides, and the others must agree with it.
    static func baseConstraint(_ request: BARRequest, pageSizes: [UInt64], basePageSize: UInt64) throws(PassthroughError) -> BaseConstraint {
        let bar = request.bar
        guard AddressAlignment.isPowerOfTwo(basePageSize) else {
            throw .invalidBar(bar: bar, reason: "base page size \(basePageSize) is not a power of two")
        }
        guard request.regionSize > 0 else { throw .invalidBar(bar: bar, reason: "the region is empty") }
        guard AddressAlignment.roundUp(request.regionSize, to: basePageSize) != nil else {
            throw .invalidBar(bar: bar, reason: "the region size \(request.regionSize.hex()) is too large")
        }
        let pageMask = basePageSize - 1
        var wants: [(modulus: UInt64, residue: UInt64)] = []
        let sorted = request.areas.sorted { $0.offset < $1.offset }
        for (index, area) in sorted.enumerated() {
            guard area.size > 0, area.offset & pageMask == 0, area.size & pageMask == 0, area.hostAddress & pageMask == 0 else {
                throw .invalidBar(bar: bar, reason: "area at \(area.offset.hex()) of \(area.size.hex()) bytes (host \(area.hostAddress.hex())) is not whole pages")
            }
            guard area.offset <= request.regionSize, area.size <= request.regionSize - area.offset else {
                throw .invalidBar(bar: bar, reason: "area at \(area.offset.hex()) of \(area.size.hex()) bytes lies outside the region of \(request.regionSize.hex()) bytes")
            }
            guard !area.hostAddress.addingReportingOverflow(area.size).overflow else {
                throw .invalidBar(bar: bar, reason: "area at \(area.offset.hex()) wraps the host address space")
            }
            if index > 0 {
                let previous = sorted[index - 1]
                guard previous.offset + previous.size <= area.offset else {
                    throw .invalidBar(bar: bar, reason: "areas at \(previous.offset.hex()) and \(area.offset.hex()) overlap")
                }
            }
            let page = HugePages.requiredCongruence(hostAddress: area.hostAddress, size: area.size, pageSizes: pageSizes) ?? basePageSize
            let modulus = max(page, basePageSize)
            wants.append((modulus, (area.hostAddress &- area.offset) & (modulus - 1)))
        }
        guard let strongest = wants.max(by: { $0.modulus < $1.modulus }) else {
            return BaseConstraint(modulus: basePageSize, residue: 0)
        }
        for want in wants where strongest.residue & (want.modulus - 1) != want.residue {
            throw .incongruentAreas(bar: bar)
        }
        return BaseConstraint(modulus: strongest.modulus, residue: strongest.residue)
    }
}

/// Where an MMIO exit lands: which region, at which offset.
public struct MMIORoute: Sendable, Hashable {
    /// The BAR number.
    public var bar: Int
    /// Its VFIO region index.
    public var regionIndex: UInt32
    /// The access's offset in the region.
    public var regionOffset: UInt64
}

/// Finds the BAR region behind a guest-physical access. Pure.
public struct MMIORouter: Sendable {
    /// The BARs, by guest-physical address.
    public let bars: [PlacedBar]

    /// A router over placed BARs.
    public init(_ bars: [PlacedBar]) { self.bars = bars.sorted { $0.guestPhysicalAddress < $1.guestPhysicalAddress } }

    /// nil when the access is not wholly inside one BAR's region (its page-rounded tail is not
    /// the device's: an access there has no register to reach).
    public func route(guestPhysicalAddress address: UInt64, length: Int) -> MMIORoute? {
        guard length > 0 else { return nil }
        for bar in bars where address >= bar.guestPhysicalAddress {
            let offset = address - bar.guestPhysicalAddress
            guard offset < bar.regionSize else { continue }
            guard UInt64(length) <= bar.regionSize - offset else { return nil }
            return MMIORoute(bar: bar.bar, regionIndex: bar.regionIndex, regionOffset: offset)
        }
        return nil
    }
}
