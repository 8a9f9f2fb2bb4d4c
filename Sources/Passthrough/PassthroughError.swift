import KVM
import PCIInventory
import TextFormat
import VFIO

/// Everything passthrough composition can fail with. The VFIO and KVM layers' errors are kept
/// whole, so their messages (which say what to do) reach the user unchanged. An operation on one
/// device fails with that operation's case, carrying the device and the cause (after Cloud
/// Hypervisor's `VfioPciError`), so a VMM can tell which device and which step went wrong.
public indirect enum PassthroughError: Error, Equatable, CustomStringConvertible {
    case vfio(VFIOError)
    case kvm(KVMError)
    /// A BAR or area description the planner cannot use (overlapping areas, not page aligned...).
    case invalidBar(bar: Int, reason: String)
    /// The BAR's areas ask for guest addresses no single BAR base satisfies: their host mappings
    /// are not congruent with each other modulo the huge pages they need.
    case incongruentAreas(bar: Int)
    /// No place in the guest window is left for the BAR.
    case noRoom(bar: Int, size: UInt64, window: Range<UInt64>)
    /// An MMIO exit at an address no BAR covers (or one that straddles a BAR's end).
    case unroutedMMIO(address: UInt64, length: Int, isWrite: Bool)
    /// The guest did something the runner does not expect (an exit it does not serve, say).
    case unexpectedGuestExit(String)
    /// A DMA request that cannot work (IOVA beyond the device's DMA mask, a transfer too large).
    case dma(String)
    /// A device did not finish in time.
    case timedOut(String)
    /// A device the passthrough device model cannot present to a guest (a bridge, say).
    case unsupportedDevice(String)

    // One case per operation on a device: the device, and why.
    /// Opening the device into the VM's DMA space, registering it with KVM, or reading what the
    /// device model needs (regions, IRQs, config space).
    case openDevice(PCIAddress, cause: PassthroughError)
    /// Mapping the device's BARs or adding their memslots.
    case addBARMemslots(PCIAddress, cause: PassthroughError)
    /// Routing MSI or MSI-X vectors (eventfds, KVM routes and irqfds, VFIO_DEVICE_SET_IRQS).
    case routeMSI(PCIAddress, index: UInt32, cause: PassthroughError)
    /// Pointing one routed vector at a new message.
    case updateMSIRoute(PCIAddress, vector: Int, cause: PassthroughError)
    /// Routing INTx to an IOAPIC pin.
    case routeINTx(PCIAddress, gsi: UInt32, cause: PassthroughError)
    /// Stopping the device's interrupts.
    case unrouteInterrupts(PCIAddress, cause: PassthroughError)

    // Causes of their own.
    /// Every memslot number below the VM's limit (KVM_CAP_NR_MEMSLOTS) is in use.
    case noFreeMemslot(limit: Int)
    /// The device's MSI or MSI-X vectors (this IRQ index) are routed already.
    case interruptsRoutedAlready(index: UInt32)
    /// An IRQ index that is neither MSI nor MSI-X where one of them is needed.
    case notMessageSignalled(index: UInt32)
    /// A vector that is not routed (or not enabled in VFIO) under this IRQ index.
    case vectorNotRouted(index: UInt32, vector: Int)

    /// What went wrong, with what to do where known.
    public var description: String {
        switch self {
        case let .vfio(error): return error.description
        case let .kvm(error): return error.description
        case let .invalidBar(bar, reason): return "BAR \(bar): \(reason)"
        case let .incongruentAreas(bar):
            return "BAR \(bar): its mmap areas are not congruent with each other modulo the huge pages they need, so no guest address maps them all huge; map them with vfioctl's placement (VFIODevice.mapPlaced)"
        case let .noRoom(bar, size, window):
            return "BAR \(bar) (\(size.hex()) bytes) does not fit in the guest's device window \(window.lowerBound.hex())-\(window.upperBound.hex()) next to the other BARs"
        case let .unroutedMMIO(address, length, isWrite):
            return "guest MMIO \(isWrite ? "write" : "read") of \(length) bytes at \(address.hex()) hits no BAR"
        case let .unexpectedGuestExit(message), let .dma(message), let .timedOut(message), let .unsupportedDevice(message):
            return message
        case let .openDevice(device, cause): return "\(device): opening it for the VM failed: \(cause)"
        case let .addBARMemslots(device, cause): return "\(device): adding its BARs as memslots failed: \(cause)"
        case let .routeMSI(device, index, cause): return "\(device): routing its \(PCIIRQ.name(index)) vectors failed: \(cause)"
        case let .updateMSIRoute(device, vector, cause): return "\(device): updating the route of vector \(vector) failed: \(cause)"
        case let .routeINTx(device, gsi, cause): return "\(device): routing INTx to GSI \(gsi) failed: \(cause)"
        case let .unrouteInterrupts(device, cause): return "\(device): stopping its interrupts failed: \(cause)"
        case let .noFreeMemslot(limit):
            return "every memslot number below the VM's limit (\(limit), KVM_CAP_NR_MEMSLOTS) is in use; delete a slot first"
        case let .interruptsRoutedAlready(index): return "its \(PCIIRQ.name(index)) vectors are routed already; unroute them first"
        case let .notMessageSignalled(index): return "IRQ index \(index) is neither MSI nor MSI-X"
        case let .vectorNotRouted(index, vector): return "\(PCIIRQ.name(index)) vector \(vector) is not routed"
        }
    }
}

/// Runs a KVM-layer call, wrapping its error.
@inline(__always)
package func viaKVM<T: ~Copyable>(_ body: () throws(KVMError) -> T) throws(PassthroughError) -> T {
    do { return try body() } catch { throw .kvm(error) }
}

/// Runs one operation on a device, wrapping its error in that operation's case.
@inline(__always)
func during<T>(_ operation: (PassthroughError) -> PassthroughError, _ body: () throws(PassthroughError) -> T) throws(PassthroughError) -> T {
    do { return try body() } catch { throw operation(error) }
}

/// Runs a VFIO-layer call, wrapping its error.
@inline(__always)
package func viaVFIO<T: ~Copyable>(_ body: () throws(VFIOError) -> T) throws(PassthroughError) -> T {
    do { return try body() } catch { throw .vfio(error) }
}

