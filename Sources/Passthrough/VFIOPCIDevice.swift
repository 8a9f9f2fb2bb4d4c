#if canImport(Glibc)
import Glibc
#endif
import KVM
import PageAlignment
import PCIInventory
import TextFormat
import VFIO

/// A passed-through PCI function on a VMM's PCI bus, placed by the guest's own PCI code (after
/// Cloud Hypervisor's `VfioPciDevice`): the VMM's conf1 handler hands it config cycles, and its
/// MMIO and port exits that fall in the device's BARs; it applies what its `PCIDeviceModel`
/// decides with the existing KVM and VFIO calls:
/// - memory BARs become `.deviceMemory` memslots at the guest's addresses (deleted and added
///   again when the guest moves them; congruent with the host mapping for huge pages where the
///   guest's address allows, else mapped with 4 KiB pages); the MSI-X table and PBA pages stay
///   out of the slots and are emulated; other exits in a BAR are VFIO region reads and writes;
/// - each MSI or MSI-X vector the guest unmasks is a KVM MSI route and an irqfd on the eventfd
///   VFIO_DEVICE_SET_IRQS gave the device's vector; masking deassigns the irqfd;
/// - INTx goes through `routeINTx` (irqfd with resample, as `PassthroughDevice.routeINTx`).
/// DMA is the VM's: `PassthroughVM.mapGuestRAM` (IOVA = gpa) is the one place it is set up.
///
/// A guest that programs garbage gets what hardware gives and a log line; a KVM or VFIO call
/// that fails while applying a guest's write is logged too, never fatal (the BAR then stays
/// reachable through MMIO exits). Not thread-safe: one vCPU thread at a time calls it.
public final class VFIOPCIDevice {
    /// The device in its VM (container, group registration, INTx).
    public let passthrough: PassthroughDevice
    /// The guest's view of the device.
    public private(set) var model: PCIDeviceModel
    /// The BARs' host mappings (MSI-X pages left out), from `mapBarsForPassthrough`.
    public let barMappings: DeviceBARMappings
    /// Lines logged (refusals, failures), for the VMM to print; also passed to `log`.
    public private(set) var logged: [String] = []
    /// Memslots present per BAR now.
    public private(set) var slots: [Int: [Memslot]] = [:]
    /// MMIO and port exits served (config cycles not counted).
    public private(set) var servedExits = 0
    /// Where log lines go (standard error by default).
    public var log: (String) -> Void
    let regions: RegionAccess
    /// Per IRQ index, per vector: its eventfd, GSI once routed, whether its irqfd is assigned.
    private var vectors: [UInt32: [(eventFD: EventFD, gsi: UInt32?, assigned: Bool)]] = [:]

    /// Opens `address` (bound to vfio-pci) in `vm`, maps its BARs on the host and reads its
    /// config space. Its memslots, one per mmap-able BAR area, are numbered by the VM's
    /// `memslotAllocator` when the guest places the BARs; they are not in the guest before.
    public init(vm: PassthroughVM, address: PCIAddress, rules: GuestBARRules,
                rom: ExpansionROMPolicy = .hidden, log: @escaping (String) -> Void = VFIOPCIDevice.standardError) throws(PassthroughError) {
        let added = try vm.addDevice(address)
        let device = added.device
        (self.model, self.barMappings) = try during({ .openDevice(address, cause: $0) }) { () throws(PassthroughError) in
            let sizes = try viaVFIO { () throws(VFIOError) in
                try (0...GuestBAR.romIndex).map { (index: Int) throws(VFIOError) -> UInt64 in
                    UInt32(index) < device.info.regionCount ? try device.regionInfo(UInt32(index)).size : 0
                }
            }
            func irqCount(_ index: UInt32) -> Int {
                guard index < device.info.irqCount, let info = try? device.irqInfo(index), info.supportsEventFD else { return 0 }
                return Int(info.count)
            }
            return (try PCIDeviceModel(config: try VFIOConfigRegion(device: device), regionSizes: sizes, msixVectors: irqCount(PCIIRQ.msix),
                                       msiVectors: irqCount(PCIIRQ.msi), rules: rules, rom: rom),
                    try device.mapBarsForPassthrough(pageSize: vm.vm.memslots.pageSize))
        }
        self.passthrough = added
        self.regions = .vfio(device)
        self.log = log
    }

    /// Writes a line to standard error.
    public static func standardError(_ line: String) {
        let text = Array((line + "\n").utf8)
        // Safety: writes `text`'s own bytes, valid for the call.
        _ = text.withUnsafeBufferPointer { Glibc.write(2, $0.baseAddress, $0.count) }
    }

    /// The device's PCI address.
    public var address: PCIAddress { passthrough.address }

    // MARK: What the VMM's bus calls

    /// A config read from the guest (conf1 data port).
    public func readConfig(_ offset: UInt64, width: AccessWidth) -> UInt64 {
        do { return try model.readConfig(offset, width: width) } catch {
            note("config read at \(offset.hex()) failed: \(error): reads all-ones")
            return width.mask
        }
    }

    /// A config write from the guest; BARs and interrupts follow it.
    public func writeConfig(_ value: UInt64, at offset: UInt64, width: AccessWidth) {
        do { apply(try model.writeConfig(value, at: offset, width: width)) } catch {
            note("config write at \(offset.hex()) failed: \(error): dropped")
        }
    }

    /// Serves an MMIO exit in one of the device's BARs (the MSI-X pages, a BAR mapped without a
    /// memslot, the ROM); false when the exit is not the device's.
    public func serveMMIO(_ exit: VMExit, on vcpu: VirtualCPU) throws(PassthroughError) -> Bool {
        guard case let .mmio(address, isWrite, length, data) = exit,
              let (bar, offset) = model.locate(address, length: length, io: false) else { return false }
        try serve(bar: bar, offset: offset, isWrite: isWrite, length: length, data: data, on: vcpu)
        return true
    }

    /// Serves a port exit in one of the device's I/O BARs; false when the exit is not the device's.
    public func serveIO(_ exit: VMExit, on vcpu: VirtualCPU) throws(PassthroughError) -> Bool {
        guard case let .io(port, direction, size, count, data) = exit, count == 1,
              let (bar, offset) = model.locate(UInt64(port), length: size, io: true) else { return false }
        try serve(bar: bar, offset: offset, isWrite: direction == .out, length: size, data: data, on: vcpu)
        return true
    }

    private func serve(bar: Int, offset: UInt64, isWrite: Bool, length: Int, data: [UInt8], on vcpu: VirtualCPU) throws(PassthroughError) {
        servedExits += 1
        let region = bar == GuestBAR.romIndex ? PCIRegion.rom : PCIRegion.bar(bar)
        guard let width = AccessWidth(rawValue: length) else {
            note("BAR \(bar) access of \(length) bytes at \(offset.hex()): not a register width: \(isWrite ? "dropped" : "reads all-ones")")
            if !isWrite { try viaKVM { () throws(KVMError) in try vcpu.provideInput([UInt8](repeating: 0xff, count: length)) } }
            return
        }
        if isWrite {
            let value = data.prefix(length).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            if let actions = model.writeBAR(bar, offset: offset, width: width, value: value) {
                apply(actions)
            } else if bar != GuestBAR.romIndex {
                try regions.write(value, region, offset, width)
            }
        } else {
            let value: UInt64
            if let emulated = model.readBAR(bar, offset: offset, width: width) { value = emulated } else { value = try regions.read(region, offset, width) }
            try viaKVM { () throws(KVMError) in
                try vcpu.provideInput((0..<length).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) })
            }
        }
    }

    /// Routes INTx to IOAPIC pin `gsi` (irqfd with resample; see `PassthroughDevice.routeINTx`).
    public func routeINTx(gsi: UInt32) throws(PassthroughError) { try passthrough.routeINTx(gsi: gsi) }

    /// Deletes the BARs' memslots and stops every interrupt (VFIO first): call before the VM goes.
    public func detach() {
        for (bar, present) in slots.sorted(by: { $0.key < $1.key }) { apply([.unmapBAR(bar: bar, guestAddress: present.first?.guestPhysicalAddress ?? 0)]) }
        for index in vectors.keys.sorted() { apply([.interrupt(.disable(index: index))]) }
    }

    // MARK: Applying the model's decisions

    private func note(_ line: String) {
        let text = "\(address): \(line)"
        if logged.count < 1000 { logged.append(text) }
        log(text)
    }

    private func apply(_ actions: [PCIDeviceAction]) {
        for action in actions {
            do throws(PassthroughError) {
                switch action {
                case let .refused(reason): note(reason)
                case let .mapBAR(bar, gpa): try map(bar: bar, at: gpa)
                case let .unmapBAR(bar, _): try unmap(bar: bar)
                case let .interrupt(interrupt): try apply(interrupt)
                }
            } catch {
                note("\(action) failed: \(error)")
            }
        }
    }

    /// Adds a memslot per mmap-able area of `bar` at `gpa` + its offset.
    private func map(bar: Int, at gpa: UInt64) throws(PassthroughError) {
        guard let memory = barMappings.bars.first(where: { $0.bar == bar }) else { return }  // I/O, ROM, or not mmap-able: exits
        let vm = passthrough.owner.vm
        var added: [Memslot] = []
        for area in memory.areas.sorted(by: { $0.offset < $1.offset }) {
            let guestAddress = gpa + area.offset
            let congruent = HugePagesCheck.congruent(hostAddress: area.memory.hostAddress, guestAddress: guestAddress,
                                                     size: UInt64(area.memory.size), pageSizes: vm.memslots.hugePageSizes)
            if !congruent {
                note("BAR \(bar) area at \(guestAddress.hex()) is not congruent with its host mapping for huge pages: mapped with 4 KiB pages")
            }
            do throws(PassthroughError) {
                let slot = Memslot(id: try passthrough.owner.allocateMemslot(), guestPhysicalAddress: guestAddress, size: UInt64(area.memory.size),
                                   userspaceAddress: area.memory.hostAddress, kind: congruent ? .deviceMemory : .ram)
                _ = try viaKVM { () throws(KVMError) in try vm.setMemoryRegion(slot, backing: area.memory) }
                added.append(slot)
            } catch {
                for done in added { _ = try? viaKVM { () throws(KVMError) in try vm.deleteSlot(done.id) } }
                throw error
            }
        }
        slots[bar] = added
    }

    /// Deletes `bar`'s memslots (after which KVM holds no translation through them).
    private func unmap(bar: Int) throws(PassthroughError) {
        guard let present = slots.removeValue(forKey: bar) else { return }
        let vm = passthrough.owner.vm
        for slot in present { try viaKVM { () throws(KVMError) in try vm.deleteSlot(slot.id) } }
    }

    private func apply(_ action: InterruptAction) throws(PassthroughError) {
        let interrupts = passthrough.owner.interrupts
        let device = passthrough.device
        switch action {
        case let .enable(index, count):
            let eventFDs = try viaVFIO { () throws(VFIOError) in try (0..<count).map { (_: Int) throws(VFIOError) in try EventFD() } }
            try viaVFIO { () throws(VFIOError) in try device.setIRQTriggers(index, eventFDs: eventFDs) }
            vectors[index] = eventFDs.map { ($0, nil, false) }
        case let .route(index, vector, message):
            guard var entry = vectors[index]?[safe: vector] else { throw .vectorNotRouted(index: index, vector: vector) }
            try viaKVM { () throws(KVMError) in
                if let gsi = entry.gsi { try interrupts.setMSIRoute(gsi, message) } else { entry.gsi = try interrupts.addMSIRoute(message) }
            }
            vectors[index]?[vector] = entry
            if !entry.assigned, let gsi = entry.gsi {
                try viaKVM { () throws(KVMError) in try interrupts.assignIRQFD(entry.eventFD.fd, gsi: gsi) }
                vectors[index]?[vector].assigned = true
            }
        case let .unroute(index, vector):
            guard let entry = vectors[index]?[safe: vector], entry.assigned, let gsi = entry.gsi else { return }
            try viaKVM { () throws(KVMError) in try interrupts.deassignIRQFD(entry.eventFD.fd, gsi: gsi) }
            vectors[index]?[vector].assigned = false
        case let .disable(index):
            guard let entries = vectors.removeValue(forKey: index) else { return }
            try viaVFIO { () throws(VFIOError) in try device.disableIRQs(index) }
            for entry in entries {
                guard let gsi = entry.gsi else { continue }
                try viaKVM { () throws(KVMError) in
                    if entry.assigned { try interrupts.deassignIRQFD(entry.eventFD.fd, gsi: gsi) }
                    try interrupts.removeMSIRoute(gsi)
                }
            }
        case let .refused(reason):
            note(reason)
        }
    }

    /// GSIs of the vectors delivered into the guest now, by IRQ index (for a VMM's report).
    public var deliveredGSIs: [UInt32: [UInt32]] {
        vectors.mapValues { $0.filter(\.assigned).compactMap(\.gsi) }
    }
}

/// Whether a BAR area's guest address keeps the huge pages its host mapping has. Pure.
enum HugePagesCheck {
    static func congruent(hostAddress: UInt64, guestAddress: UInt64, size: UInt64, pageSizes: [UInt64]) -> Bool {
        guard let page = HugePages.requiredCongruence(hostAddress: hostAddress, size: size, pageSizes: pageSizes) else { return true }
        return HugePages.isCongruent(guestAddress, hostAddress, modulo: page)
    }
}

extension Array {
    /// The element at `index`, or nil outside the array.
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
