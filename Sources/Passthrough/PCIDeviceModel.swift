import KVM
import PCIInventory
import TextFormat
import VFIO

/// What a guest's config or BAR access asks of the VMM: BAR memslots to add or delete, interrupt
/// wiring, or a refusal to log. Decided by `PCIDeviceModel`, applied by `VFIOPCIDevice`.
public enum PCIDeviceAction: Sendable, Equatable {
    /// Add the BAR's memslots (memory) or route its ports (I/O) at `guestAddress`.
    case mapBAR(bar: Int, guestAddress: UInt64)
    /// Delete the BAR's memslots (or its port routing) at `guestAddress`, where they were.
    case unmapBAR(bar: Int, guestAddress: UInt64)
    /// Interrupt wiring for MSI or MSI-X.
    case interrupt(InterruptAction)
    /// What the guest asked that the VMM does not do (hardware would not either): log it.
    case refused(String)
}

/// How the guest sees the device's expansion ROM.
public enum ExpansionROMPolicy: Sendable, Equatable {
    /// No ROM: register 0x30 reads zero and ignores writes (sizing finds nothing).
    case hidden
    /// The ROM region's contents, at the address the guest gives the ROM BAR, read through
    /// VFIO's ROM region (MMIO exits; no memslot).
    case served
}

/// A VFIO device's PCI function as a guest sees it on the VMM's bus, after Cloud Hypervisor's
/// `VfioPciDevice`: config space reads and writes go to the device through a `PCIConfigRegion`,
/// except what a VMM must virtualize:
/// - the BARs (sizing protocol, the guest's own addresses, 64-bit pairs, I/O and memory, the
///   prefetchable bit kept) and the expansion ROM (hidden, or served from the ROM region);
/// - the command register passes through, and its decode bits map and unmap the BARs;
/// - the MSI-X capability (enable, function mask; table and PBA where the device has them) and
///   the MSI capability are emulated, with their table and PBA pages trapped;
/// - capabilities the guest must not reach are unlinked from the list and read as zero.
///
/// Pure apart from the config region it reads and writes: every access returns the
/// `PCIDeviceAction`s the VMM applies, so it is tested against a fake region.
public struct PCIDeviceModel {
    /// Where its config space is.
    public let config: PCIConfigRegion
    /// The rules a BAR's guest address must meet to be mapped.
    public var rules: GuestBARRules
    /// BARs and the ROM the device implements, by number (`GuestBAR.romIndex` for the ROM).
    public private(set) var bars: [Int: GuestBAR] = [:]
    /// Where each BAR is mapped into the guest now (decode on, address accepted).
    public private(set) var mapped: [Int: UInt64] = [:]
    /// The command register as last read back from the device.
    public private(set) var command: UInt16
    /// The device's MSI-X layout and the guest's table, if it has MSI-X.
    public private(set) var msix: (capability: Int, layout: MSIXLayout, table: MSIXVectorTable)?
    /// The device's MSI capability and the guest's view of it, if it has MSI.
    public private(set) var msi: (capability: Int, vectors: MSIVectors)?
    /// Standard capabilities in list order: (ID, offset, hidden).
    public let capabilities: [(id: UInt8, offset: Int, hidden: Bool)]
    /// Register index (0-5) to (BAR number, whether it is a 64-bit BAR's high dword).
    private var registers: [Int: (bar: Int, upper: Bool)] = [:]
    /// The address a BAR was last refused at, so each refusal is logged once.
    private var refusedAt: [Int: UInt64] = [:]

    /// Capability IDs hidden by default: Enhanced Allocation (0x14) gives fixed host addresses
    /// that replace the BARs, which the guest must place itself here.
    public static let defaultHiddenCapabilities: Set<UInt8> = [0x14]
    /// Standard config space a conf1 access reaches.
    public static let configSize: UInt64 = 256

    /// Reads the device's header and capabilities through `config`. `regionSizes[n]` is VFIO's
    /// size of region n (BARs 0-5, the ROM at 6; 0 where absent); `msixVectors` and `msiVectors`
    /// VFIO's IRQ counts. Throws for a device that is not a type-0 header or whose BARs
    /// contradict their region sizes.
    public init(config: PCIConfigRegion, regionSizes: [UInt64], msixVectors: Int, msiVectors: Int, rules: GuestBARRules,
                rom: ExpansionROMPolicy = .hidden, hiddenCapabilities: Set<UInt8> = PCIDeviceModel.defaultHiddenCapabilities) throws(PassthroughError) {
        var bytes: [UInt8] = []
        for offset in stride(from: UInt64(0), to: Self.configSize, by: 4) {
            let dword = try config.readConfig(offset, width: .dword)
            bytes += (0..<4).map { UInt8(truncatingIfNeeded: dword >> (8 * UInt64($0))) }
        }
        let space = PCIConfigSpace(bytes: bytes)
        guard space.headerType == 0 else {
            throw .unsupportedDevice("header type \(space.headerType.map { String($0) } ?? "unreadable") is not an endpoint's (0): bridges are not passed through")
        }
        self.config = config
        self.rules = rules
        self.command = UInt16(bytes[4]) | UInt16(bytes[5]) << 8
        func dword(_ offset: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) } }
        func size(_ region: Int) -> UInt64 { region < regionSizes.count ? regionSizes[region] : 0 }

        var register = 0
        while register < 6 {
            let raw = dword(0x10 + 4 * register)
            let regionSize = size(register)
            guard regionSize > 0 else { register += 1; continue }
            let kind: GuestBAR.Kind = raw & 1 != 0 ? .io : (raw & 0x6 == 0x4 ? .memory64 : .memory32)
            guard kind != .memory64 || register < 5 else {
                throw .invalidBar(bar: register, reason: "a 64-bit BAR in the last register has no high dword")
            }
            guard let bar = GuestBAR(index: register, kind: kind, size: regionSize, isPrefetchable: raw & 0x8 != 0) else {
                throw .invalidBar(bar: register, reason: "region size \(regionSize.hex()) is not a power of two a \(kind) BAR can have")
            }
            bars[register] = bar
            registers[register] = (register, false)
            if kind == .memory64 {
                registers[register + 1] = (register, true)
                register += 2
            } else {
                register += 1
            }
        }
        if rom == .served, size(GuestBAR.romIndex) > 0 {
            guard let bar = GuestBAR(index: GuestBAR.romIndex, kind: .rom, size: size(GuestBAR.romIndex)) else {
                throw .invalidBar(bar: GuestBAR.romIndex, reason: "ROM region size \(size(GuestBAR.romIndex).hex()) is not a power of two of at least 2 KiB")
            }
            bars[GuestBAR.romIndex] = bar
        }

        // The capability list, with a guard against loops and garbage pointers.
        var list: [(id: UInt8, offset: Int, hidden: Bool)] = []
        if bytes[6] & 0x10 != 0 {
            var pointer = Int(bytes[0x34]) & ~3
            while pointer >= 0x40, pointer < Int(Self.configSize) - 1, list.count < 48, !list.contains(where: { $0.offset == pointer }) {
                let id = bytes[pointer]
                list.append((id, pointer, hiddenCapabilities.contains(id)))
                pointer = Int(bytes[pointer + 1]) & ~3
            }
        }
        self.capabilities = list
        if let cap = list.first(where: { $0.id == 0x11 && !$0.hidden }), let layout = space.msix {
            msix = (cap.offset, layout, MSIXVectorTable(tableSize: layout.vectors, deliverable: msixVectors))
        }
        if let cap = list.first(where: { $0.id == 0x05 && !$0.hidden }) {
            let control = UInt16(bytes[cap.offset + 2]) | UInt16(bytes[cap.offset + 3]) << 8
            msi = (cap.offset, MSIVectors(capabilityControl: control, deliverable: msiVectors))
        }
    }

    // MARK: Config space

    /// A guest config read of `width` bytes (1, 2 or 4, naturally aligned) at `offset`. Other
    /// accesses read all-ones, as a master abort does.
    public func readConfig(_ offset: UInt64, width: AccessWidth) throws(PassthroughError) -> UInt64 {
        guard isValidConfigAccess(offset, width) else { return width.mask }
        let aligned = Int(offset & ~3), shift = (offset & 3) * 8
        if let dword = try virtualDword(aligned) { return (UInt64(dword) >> shift) & width.mask }
        return try config.readConfig(offset, width: width)
    }

    /// A guest config write; returns what the VMM must do about it.
    public mutating func writeConfig(_ value: UInt64, at offset: UInt64, width: AccessWidth) throws(PassthroughError) -> [PCIDeviceAction] {
        guard isValidConfigAccess(offset, width) else {
            return [.refused("config write of \(width.rawValue) bytes at \(offset.hex()) is not a naturally aligned 1, 2 or 4 byte access in 256 bytes: dropped")]
        }
        let aligned = Int(offset & ~3), shift = (offset & 3) * 8
        let byteMask = UInt32(truncatingIfNeeded: width.mask << shift)
        func merged(_ old: UInt32) -> UInt32 { (old & ~byteMask) | (UInt32(truncatingIfNeeded: value << shift) & byteMask) }

        if (0x10..<0x28).contains(aligned) {
            let index = (aligned - 0x10) / 4
            guard let target = registers[index], var bar = bars[target.bar] else { return [] }  // unimplemented: reads zero
            bar.write(merged(bar.register(upper: target.upper)), upper: target.upper)
            bars[target.bar] = bar
            return reconcileBARs()
        }
        if aligned == 0x30 {
            guard var rom = bars[GuestBAR.romIndex] else { return [] }
            rom.write(merged(rom.register(upper: false)), upper: false)
            bars[GuestBAR.romIndex] = rom
            return reconcileBARs()
        }
        if aligned == 0x34 { return [] }  // the capability pointer is read-only
        if let cap = hiddenSpan(containing: aligned) {
            return [.refused("config write at \(offset.hex()) inside hidden capability \(cap.id.hex()) at \(cap.offset.hex()): dropped")]
        }
        if let cap = msix?.capability, (cap..<cap + 12).contains(aligned) {
            // Message Control is emulated; the table and PBA offsets are read-only.
            guard aligned == cap, byteMask & 0xffff_0000 != 0, var state = msix else { return [] }
            let control = UInt16(truncatingIfNeeded: merged(UInt32(state.table.messageControl) << 16) >> 16)
            let actions = state.table.writeMessageControl(control)
            msix = state
            return actions.map(Self.wrap)
        }
        if var state = msi, (state.capability..<state.capability + state.vectors.length).contains(aligned) {
            let relative = aligned - state.capability
            if relative == 0 && byteMask & 0xffff_0000 == 0 { return [] }
            let old = state.vectors.readDword(relative)
            let actions = state.vectors.writeDword(relative, merged(old))
            msi = state
            return actions.map(Self.wrap)
        }
        try config.writeConfig(value, at: offset, width: width)
        if aligned == 0x04, byteMask & 0xffff != 0 {
            // The device decides which command bits stick; the BARs follow its decode bits.
            command = UInt16(truncatingIfNeeded: try config.readConfig(0x04, width: .word))
            return reconcileBARs()
        }
        return []
    }

    private func isValidConfigAccess(_ offset: UInt64, _ width: AccessWidth) -> Bool {
        width != .qword && offset % UInt64(width.rawValue) == 0 && offset < Self.configSize
    }

    private static func wrap(_ action: InterruptAction) -> PCIDeviceAction {
        if case let .refused(reason) = action { return .refused(reason) }
        return .interrupt(action)
    }

    /// The dword the guest reads at `aligned`, when the VMM virtualizes it; nil to read the device.
    private func virtualDword(_ aligned: Int) throws(PassthroughError) -> UInt32? {
        if (0x10..<0x28).contains(aligned) {
            guard let target = registers[(aligned - 0x10) / 4], let bar = bars[target.bar] else { return 0 }
            return bar.register(upper: target.upper)
        }
        if aligned == 0x30 { return bars[GuestBAR.romIndex]?.register(upper: false) ?? 0 }
        if hiddenSpan(containing: aligned) != nil { return 0 }
        if aligned == 0x34 {
            let device = UInt32(truncatingIfNeeded: try config.readConfig(0x34, width: .dword))
            return (device & ~0xff) | UInt32(visibleCapability(after: nil))
        }
        if let state = msix, aligned == state.capability {
            return UInt32(try header(aligned)) | UInt32(state.table.messageControl) << 16
        }
        if let state = msi, (state.capability..<state.capability + state.vectors.length).contains(aligned) {
            let cap = state.capability, vectors = state.vectors
            let relative = aligned - cap
            return relative == 0 ? UInt32(try header(cap)) | vectors.readDword(0) : vectors.readDword(relative)
        }
        if let index = capabilities.firstIndex(where: { $0.offset == aligned }) {
            let device = UInt32(truncatingIfNeeded: try config.readConfig(UInt64(aligned), width: .dword))
            let next = visibleCapability(after: index)
            return (device & ~0xff00) | UInt32(next) << 8
        }
        return nil
    }

    /// A capability's ID and its next pointer, skipping hidden ones.
    private func header(_ offset: Int) throws(PassthroughError) -> UInt16 {
        let id = UInt16(truncatingIfNeeded: try config.readConfig(UInt64(offset), width: .byte))
        guard let index = capabilities.firstIndex(where: { $0.offset == offset }) else { return id }
        return id | UInt16(visibleCapability(after: index)) << 8
    }

    /// The offset of the first visible capability after list position `index` (nil: from the
    /// start of the list), 0 at the end.
    private func visibleCapability(after index: Int?) -> UInt8 {
        let start = index.map { $0 + 1 } ?? 0
        guard start < capabilities.count else { return 0 }
        return capabilities[start...].first(where: { !$0.hidden }).map { UInt8($0.offset) } ?? 0
    }

    /// The hidden capability whose bytes (up to the next capability by offset) hold `aligned`.
    private func hiddenSpan(containing aligned: Int) -> (id: UInt8, offset: Int)? {
        for cap in capabilities where cap.hidden && aligned >= cap.offset {
            let end = capabilities.map(\.offset).filter { $0 > cap.offset }.min() ?? Int(Self.configSize)
            if aligned < end { return (cap.id, cap.offset) }
        }
        return nil
    }

    // MARK: BAR placement

    /// Whether the command register lets `bar` decode.
    private func decodes(_ bar: GuestBAR) -> Bool {
        switch bar.kind {
        case .io: return command & 0x1 != 0
        case .memory32, .memory64: return command & 0x2 != 0
        case .rom: return command & 0x2 != 0 && bar.romEnabled
        }
    }

    /// Maps every decoding BAR at its guest address where the rules allow, unmaps the rest:
    /// unmaps first, so a BAR moving onto a range another just left finds it free.
    private mutating func reconcileBARs() -> [PCIDeviceAction] {
        var actions: [PCIDeviceAction] = []
        var wanted: [Int: UInt64] = [:]
        var taken: [Bool: [Range<UInt64>]] = [:]
        for index in bars.keys.sorted() {
            guard let bar = bars[index] else { continue }
            guard decodes(bar) else { refusedAt[index] = nil; continue }
            if let problem = rules.problem(with: bar, others: taken[bar.isMemory] ?? []) {
                if refusedAt[index] != bar.address {
                    refusedAt[index] = bar.address
                    actions.append(.refused("\(index == GuestBAR.romIndex ? "ROM" : "BAR \(index)") at \(bar.address.hex()) (\(bar.size.hex()) bytes): \(problem): not mapped"))
                }
                continue
            }
            refusedAt[index] = nil
            wanted[index] = bar.address
            taken[bar.isMemory, default: []].append(bar.address..<bar.address + bar.size)
        }
        for (index, address) in mapped.sorted(by: { $0.key < $1.key }) where wanted[index] != address {
            actions.append(.unmapBAR(bar: index, guestAddress: address))
        }
        for (index, address) in wanted.sorted(by: { $0.key < $1.key }) where mapped[index] != address {
            actions.append(.mapBAR(bar: index, guestAddress: address))
        }
        mapped = wanted
        return actions
    }

    /// The BAR and offset a guest access at `address` (memory, or I/O ports) falls in, among the
    /// mapped BARs; nil when it hits none or straddles a BAR's end.
    public func locate(_ address: UInt64, length: Int, io: Bool) -> (bar: Int, offset: UInt64)? {
        for (index, start) in mapped {
            guard let bar = bars[index], bar.isMemory != io, address >= start else { continue }
            let offset = address - start
            if offset < bar.size, UInt64(length) <= bar.size - offset { return (index, offset) }
        }
        return nil
    }

    // MARK: MSI-X table and PBA

    /// A guest read in a BAR that the MSI-X table or PBA answers; nil when the access is
    /// elsewhere in the BAR (read the device).
    public func readBAR(_ bar: Int, offset: UInt64, width: AccessWidth) -> UInt64? {
        guard let layout = msix?.layout, let table = msix?.table else { return nil }
        if bar == layout.tableBAR, offset >= layout.tableOffset, offset - layout.tableOffset < layout.tableSize {
            return table.readTable(offset: offset - layout.tableOffset, width: width)
        }
        if bar == layout.pbaBAR, offset >= layout.pbaOffset, offset - layout.pbaOffset < layout.pbaSize {
            return table.readPBA(offset: offset - layout.pbaOffset, width: width)
        }
        return nil
    }

    /// A guest write in a BAR that the MSI-X table (or the read-only PBA) takes; nil when the
    /// access is elsewhere in the BAR (write the device).
    public mutating func writeBAR(_ bar: Int, offset: UInt64, width: AccessWidth, value: UInt64) -> [PCIDeviceAction]? {
        guard var state = msix else { return nil }
        let layout = state.layout
        if bar == layout.tableBAR, offset >= layout.tableOffset, offset - layout.tableOffset < layout.tableSize {
            let actions = state.table.writeTable(offset: offset - layout.tableOffset, width: width, value: value)
            msix = state
            return actions.map(Self.wrap)
        }
        if bar == layout.pbaBAR, offset >= layout.pbaOffset, offset - layout.pbaOffset < layout.pbaSize {
            return [.refused("write to the read-only MSI-X PBA at BAR \(bar) offset \(offset.hex()): dropped")]
        }
        return nil
    }

    /// Records that masked MSI-X `vector` has an interrupt waiting (its PBA bit), or not.
    public mutating func setMSIXPending(_ vector: Int, _ isPending: Bool) {
        msix?.table.setPending(vector, isPending)
    }
}
