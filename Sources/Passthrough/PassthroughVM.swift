import KVM
import PCIInventory
import SystemPackage
import VFIO

/// Everything one VM needs to pass devices through, in one object a VMM keeps for the VM's
/// life: one DMA space (a type1 container or an iommufd IOAS: every device's DMA goes through one
/// IOMMU table), each VFIO group (type1) or device file (iommufd) registered once with the
/// KVM-VFIO device, any number of devices (several of one group included), their BARs as memslots, guest RAM DMA-mapped at IOVA = gpa, and
/// their interrupts delivered into the guest by KVM (irqfd), never through this process.
///
/// Set-up order: create the VM, then this object (it creates the in-kernel irqchip, which must
/// precede the vCPUs), add devices, RAM and BAR memslots, route interrupts, then create vCPUs.
///
/// Lifetimes: the container holds what each DMA mapping maps, the VM and `BARMemslots` hold
/// what each memslot points into, and each device holds its group and the container, so no
/// memory is unmapped while a DMA mapping or a memslot still uses it, whatever order the caller
/// lets go in. Not thread-safe: one thread at a time configures it (vCPUs may run meanwhile).
public final class PassthroughVM {
    /// The KVM VM (held).
    public let vm: VirtualMachine
    /// The VM's one DMA space: every device is opened into it, whichever the backend.
    public let dmaSpace: any DMASpace
    /// The DMA space as a type1 container; nil on iommufd.
    public var container: VFIOContainer? { dmaSpace as? VFIOContainer }
    /// The in-kernel irqchip, its GSI routes and irqfds.
    public let interrupts: InterruptController
    /// The KVM-VFIO device every group is registered with.
    public let kvmVFIO: KVMVFIODevice
    /// Where devices' IOMMU groups and BAR resources are read (/sys).
    public let sysfsRoot: String
    /// Where the VFIO nodes are (/dev/vfio).
    public let devVFIO: String
    /// Devices in the order they were added.
    public private(set) var devices: [PassthroughDevice] = []
    /// Guest RAM mapped for DMA, in the order it was mapped.
    public private(set) var guestRAM: [GuestRAMDMAMapping] = []
    /// Numbers every memslot this object adds (BARs of every device): the VMM's one allocator.
    public let memslotAllocator: any MemslotAllocator
    /// Files registered with the KVM-VFIO device (a group's node, or a device file on iommufd),
    /// by path, each with the object whose descriptor was registered (held: registered while held).
    private var registeredFiles: [String: AnyObject] = [:]

    /// Opens the DMA space of `backend` (a type1 container, or an iommufd IOAS at `devRoot`/iommu)
    /// and creates the irqchip and the KVM-VFIO device. `vm` must have no vCPU yet. Memslots for
    /// devices' BARs are numbered by `memslotAllocator`: pass the VMM's own where it adds slots
    /// of its own too.
    public init(vm: VirtualMachine, backend: VFIOBackend = .type1, sysfsRoot: String = "/sys", devVFIO: String = "/dev/vfio",
                devRoot: String = "/dev", memslotAllocator: any MemslotAllocator = LowestFreeMemslot()) throws(PassthroughError) {
        self.dmaSpace = try viaVFIO { () throws(VFIOError) in try makeDMASpace(backend, devVFIO: devVFIO, devRoot: devRoot) }
        (self.interrupts, self.kvmVFIO) = try viaKVM { () throws(KVMError) in (try InterruptController(vm: vm), try KVMVFIODevice(vm: vm)) }
        self.vm = vm
        self.sysfsRoot = sysfsRoot
        self.devVFIO = devVFIO
        self.memslotAllocator = memslotAllocator
    }

    /// Opens a device bound to vfio-pci into this VM's DMA space; its group (type1) is attached
    /// and registered with KVM the first time one of its devices is added, its device file
    /// (iommufd) when it is added.
    public func addDevice(_ address: PCIAddress) throws(PassthroughError) -> PassthroughDevice {
        let device = try during({ .openDevice(address, cause: $0) }) { () throws(PassthroughError) in
            let device = try viaVFIO { () throws(VFIOError) in try dmaSpace.openDevice(address, sysfsRoot: sysfsRoot, devVFIO: devVFIO) }
            let node = device.nodePath
            if registeredFiles[node] == nil {
                // The descriptor is borrowed for the call; KVM takes its own reference.
                try viaKVM { () throws(KVMError) in try kvmVFIO.addFile(FileDescriptor(rawValue: device.kvmFileDescriptor)) }
                registeredFiles[node] = device.group ?? device
            }
            return device
        }
        let added = PassthroughDevice(device: device, owner: self)
        devices.append(added)
        return added
    }

    /// Maps `memory`, which the guest sees at `guestPhysicalAddress`, for every device's DMA at
    /// IOVA = gpa (see `GuestRAMDMAMapping`). Kept until `unmapGuestRAM` or the end of this object.
    @discardableResult
    public func mapGuestRAM(_ memory: GuestMemory, guestPhysicalAddress: UInt64,
                            deviceAddressBits: Int? = nil) throws(PassthroughError) -> GuestRAMDMAMapping {
        let mapping = try GuestRAMDMAMapping(space: dmaSpace, memory: memory, guestPhysicalAddress: guestPhysicalAddress,
                                             deviceAddressBits: deviceAddressBits)
        guestRAM.append(mapping)
        return mapping
    }

    /// Unmaps one mapping made by `mapGuestRAM`.
    public func unmapGuestRAM(_ mapping: GuestRAMDMAMapping) throws(PassthroughError) {
        try mapping.unmap()
        guestRAM.removeAll { $0 === mapping }
    }

    /// Guest-physical ranges the VM's memslots occupy now (BARs are placed clear of them).
    public var occupiedGuestRanges: [Range<UInt64>] {
        vm.memslots.allSlots.map { $0.guestPhysicalAddress..<($0.guestPhysicalAddress + $0.size) }
    }

    /// The id for the next memslot, from `memslotAllocator`.
    func allocateMemslot() throws(PassthroughError) -> MemslotID {
        try Self.allocate(memslotAllocator, in: vm.memslots)
    }

    /// The id `allocator` gives for a new slot in `table`, or `.noFreeMemslot`.
    static func allocate(_ allocator: any MemslotAllocator, in table: MemslotTable) throws(PassthroughError) -> MemslotID {
        guard let id = allocator.nextSlot(in: table) else { throw .noFreeMemslot(limit: table.slotsPerAddressSpace) }
        return id
    }
}

/// One device of a `PassthroughVM`: its BARs in the guest and its interrupts into the guest.
public final class PassthroughDevice {
    /// The VFIO device (its group and the VM's container are held through it).
    public let device: VFIODevice
    /// The VM it belongs to (unowned: the VM holds its devices).
    unowned let owner: PassthroughVM
    /// The BARs' mappings, once `addBARMemslots` made them.
    public private(set) var barMappings: DeviceBARMappings?
    /// The BARs as memslots, once `addBARMemslots` added them.
    public private(set) var memslots: BARMemslots?
    /// MSI or MSI-X vectors routed into the guest: the IRQ index, and per vector its eventfd
    /// and GSI.
    public private(set) var msiIndex: UInt32?
    /// Per routed vector, its eventfd (signalled by VFIO) and its GSI.
    public private(set) var msiVectors: [(eventFD: EventFD, gsi: UInt32)] = []
    /// INTx routed into the guest: trigger and resample eventfds, and the IOAPIC pin (GSI).
    public private(set) var intx: (trigger: EventFD, resample: EventFD, gsi: UInt32)?

    init(device: VFIODevice, owner: PassthroughVM) {
        self.device = device
        self.owner = owner
    }

    /// The device's PCI address.
    public var address: PCIAddress { device.address }

    /// Maps every mmap-able BAR area (placed for huge pages; MSI-X table and PBA pages left out
    /// and served as MMIO exits) and adds each as a memslot, each BAR whole at a base in
    /// `window` so its areas keep their offsets, congruent with their host mappings modulo the
    /// huge page they need (`GuestPlacement`), clear of every memslot the VM has and of `reserved`.
    @discardableResult
    public func addBARMemslots(window: Range<UInt64>, reserved: [Range<UInt64>] = []) throws(PassthroughError) -> BARMemslots {
        if let memslots { return memslots }
        let (mapped, slots) = try during({ .addBARMemslots(address, cause: $0) }) { () throws(PassthroughError) in
            let mapped = try device.mapBarsForPassthrough(pageSize: owner.vm.memslots.pageSize)
            guard !mapped.bars.isEmpty else {
                throw .invalidBar(bar: 0, reason: "no mmap-able memory BAR (\(mapped.skipped.map { "BAR \($0.bar): \($0.reason)" }.joined(separator: "; ")))")
            }
            return (mapped, try BARMemslots(vm: owner.vm, bars: mapped.bars, window: window, reserved: owner.occupiedGuestRanges + reserved,
                                            allocator: owner.memslotAllocator, regions: .vfio(device)))
        }
        barMappings = mapped
        memslots = slots
        return slots
    }

    /// Routes MSI (`PCIIRQ.msi`) or MSI-X (`PCIIRQ.msix`) vectors into the guest: one eventfd per
    /// message, given to VFIO (which enables the vectors in the device) and to KVM as an irqfd
    /// on an MSI route carrying the message. Returns the GSIs, in vector order. Undone on error.
    @discardableResult
    public func routeMSI(index: UInt32, messages: [MSIMessage]) throws(PassthroughError) -> [UInt32] {
        try during({ .routeMSI(address, index: index, cause: $0) }) { () throws(PassthroughError) in try routeMessages(index: index, messages) }
    }

    private func routeMessages(index: UInt32, _ messages: [MSIMessage]) throws(PassthroughError) -> [UInt32] {
        guard index == PCIIRQ.msi || index == PCIIRQ.msix else { throw .notMessageSignalled(index: index) }
        if let msiIndex { throw .interruptsRoutedAlready(index: msiIndex) }
        guard !messages.isEmpty else { return [] }
        let interrupts = owner.interrupts
        var routed: [(eventFD: EventFD, gsi: UInt32)] = []
        do throws(PassthroughError) {
            for message in messages {
                let eventFD = try viaVFIO { () throws(VFIOError) in try EventFD() }
                let gsi = try viaKVM { () throws(KVMError) in try interrupts.addMSIRoute(message) }
                routed.append((eventFD, gsi))
                try viaKVM { () throws(KVMError) in try interrupts.assignIRQFD(eventFD.fd, gsi: gsi) }
            }
            try viaVFIO { () throws(VFIOError) in try device.setIRQTriggers(index, eventFDs: routed.map(\.eventFD)) }
        } catch {
            for vector in routed {
                try? viaKVM { () throws(KVMError) in
                    if interrupts.irqfds.contains(where: { $0.gsi == vector.gsi }) { try interrupts.deassignIRQFD(vector.eventFD.fd, gsi: vector.gsi) }
                    try interrupts.removeMSIRoute(vector.gsi)
                }
            }
            throw error
        }
        msiIndex = index
        msiVectors = routed
        return routed.map(\.gsi)
    }

    /// Points one routed vector at a new message (the guest reprogrammed that MSI-X entry):
    /// one KVM_SET_GSI_ROUTING; eventfd, irqfd and device stay as they are.
    public func updateMSIRoute(vector: Int, _ message: MSIMessage) throws(PassthroughError) {
        try during({ .updateMSIRoute(address, vector: vector, cause: $0) }) { () throws(PassthroughError) in
            guard msiVectors.indices.contains(vector) else { throw .vectorNotRouted(index: msiIndex ?? PCIIRQ.msix, vector: vector) }
            try viaKVM { () throws(KVMError) in try owner.interrupts.setMSIRoute(msiVectors[vector].gsi, message) }
        }
    }

    /// Routes INTx to IOAPIC pin `gsi`: VFIO signals the trigger eventfd, an irqfd raises the
    /// pin, and the guest's EOI signals the resample eventfd, which VFIO takes as the unmask
    /// (the line is level-triggered and automasked), all in the kernel.
    public func routeINTx(gsi: UInt32) throws(PassthroughError) {
        guard intx == nil else { return }
        intx = try during({ .routeINTx(address, gsi: gsi, cause: $0) }) { () throws(PassthroughError) in
            let (trigger, resample) = try viaVFIO { () throws(VFIOError) in (try EventFD(), try EventFD()) }
            do throws(PassthroughError) {
                try viaVFIO { () throws(VFIOError) in
                    try device.setIRQTriggers(PCIIRQ.intx, eventFDs: [trigger])
                    try device.setINTxUnmaskEventFD(resample)
                }
                try viaKVM { () throws(KVMError) in try owner.interrupts.assignIRQFD(trigger.fd, gsi: gsi, resample: resample.fd) }
            } catch {
                _ = try? device.disableIRQs(PCIIRQ.intx)
                throw error
            }
            return (trigger, resample, gsi)
        }
    }

    /// Stops the device's interrupts (VFIO first, so no signal arrives at a dropped irqfd) and
    /// removes their irqfds and routes.
    public func unrouteInterrupts() throws(PassthroughError) {
        try during({ .unrouteInterrupts(address, cause: $0) }) { () throws(PassthroughError) in try stopInterrupts() }
    }

    private func stopInterrupts() throws(PassthroughError) {
        let interrupts = owner.interrupts
        if let index = msiIndex {
            try viaVFIO { () throws(VFIOError) in try device.disableIRQs(index) }
            for vector in msiVectors {
                try viaKVM { () throws(KVMError) in
                    try interrupts.deassignIRQFD(vector.eventFD.fd, gsi: vector.gsi)
                    try interrupts.removeMSIRoute(vector.gsi)
                }
            }
            msiIndex = nil
            msiVectors = []
        }
        if let line = intx {
            try viaVFIO { () throws(VFIOError) in try device.disableIRQs(PCIIRQ.intx) }
            try viaKVM { () throws(KVMError) in try interrupts.deassignIRQFD(line.trigger.fd, gsi: line.gsi) }
            intx = nil
        }
    }
}
