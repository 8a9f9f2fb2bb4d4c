#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import SystemCalls
import SystemPackage

/// Bits of the PCI command register the library sets (linux/pci_regs.h).
public enum PCICommand {
    /// The command register's offset in config space.
    public static let offset = UInt64(PCI_COMMAND)
    /// I/O space decoding.
    public static let ioSpace = UInt16(PCI_COMMAND_IO)
    /// Memory space decoding: BAR accesses reach the device only with it set.
    public static let memorySpace = UInt16(PCI_COMMAND_MEMORY)
    /// Bus mastering: the device may do DMA and send MSIs only with it set.
    public static let busMaster = UInt16(PCI_COMMAND_MASTER)
    /// INTx disable: set, the device does not assert its INTx line.
    public static let intxDisable = UInt16(PCI_COMMAND_INTX_DISABLE)
}

extension VFIODevice {
    /// The config-space region (VFIO_PCI_CONFIG_REGION_INDEX): reads and writes go through the
    /// kernel, which virtualizes some fields (BARs, MSI capability) for the user.
    public func configRegion() throws(VFIOError) -> RegionInfo {
        try regionInfo(PCIRegion.config)
    }

    /// Reads `width` bytes of config space at `offset` (VFIO's config region, which vfio-pci virtualizes in part).
    public func readConfig(_ offset: UInt64, width: AccessWidth) throws(VFIOError) -> UInt64 {
        try read(configRegion(), offset: offset, width: width)
    }

    /// Writes the low `width` bytes of `value` to config space at `offset`.
    public func writeConfig(_ value: UInt64, at offset: UInt64, width: AccessWidth) throws(VFIOError) {
        try write(value, to: configRegion(), offset: offset, width: width)
    }

    /// The first `count` bytes of config space, read a dword at a time.
    public func readConfigBytes(count: Int) throws(VFIOError) -> [UInt8] {
        let region = try configRegion()
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        var offset: UInt64 = 0
        while bytes.count < count {
            let dword = try read(region, offset: offset, width: .dword)
            for index in 0..<4 where bytes.count < count { bytes.append(UInt8(truncatingIfNeeded: dword >> (8 * UInt64(index)))) }
            offset += 4
        }
        return bytes
    }

    /// The command register's current value.
    public func commandRegister() throws(VFIOError) -> UInt16 {
        UInt16(truncatingIfNeeded: try readConfig(PCICommand.offset, width: .word))
    }

    /// Sets or clears bits of the command register (read-modify-write).
    public func updateCommand(set: UInt16 = 0, clear: UInt16 = 0) throws(VFIOError) {
        let current = try commandRegister()
        let next = (current & ~clear) | set
        if next != current { try writeConfig(UInt64(next), at: PCICommand.offset, width: .word) }
        decode.memoryEnabled = next & PCICommand.memorySpace != 0
    }

    /// Turns memory decoding on or off. While off, this device's mappings refuse every access
    /// (the kernel would raise SIGBUS; vfio-pci also zaps the mappings).
    public func setMemoryDecoding(_ enabled: Bool) throws(VFIOError) {
        try updateCommand(set: enabled ? PCICommand.memorySpace : 0, clear: enabled ? 0 : PCICommand.memorySpace)
    }

    /// Bus mastering must be on for the device to do DMA (and to send MSIs).
    public func setBusMaster(_ enabled: Bool) throws(VFIOError) {
        try updateCommand(set: enabled ? PCICommand.busMaster : 0, clear: enabled ? 0 : PCICommand.busMaster)
    }

    /// Re-reads memory decoding from the command register (someone else may have changed it).
    public func refreshMemoryDecodeState() throws(VFIOError) {
        decode.memoryEnabled = try commandRegister() & PCICommand.memorySpace != 0
    }

    /// Whether the device decodes memory accesses now (its command register's memory space bit).
    public var memoryDecodingEnabled: Bool { decode.memoryEnabled }
}

/// What VFIO_DEVICE_GET_IRQ_INFO says about one interrupt index.
public struct IRQInfo: Sendable, Equatable {
    /// The IRQ index (`PCIIRQ`).
    public let index: UInt32
    /// VFIO_IRQ_INFO_* flags.
    public let flags: UInt32
    /// Vectors available at this index (0: the device has none of this kind).
    public let count: UInt32
    /// The index's interrupts can signal an eventfd.
    public var supportsEventFD: Bool { flags & UInt32(VFIO_IRQ_INFO_EVENTFD) != 0 }
    /// The index's vectors can be masked through VFIO.
    public var isMaskable: Bool { flags & UInt32(VFIO_IRQ_INFO_MASKABLE) != 0 }
    /// The kernel masks the line when it fires (INTx); the user unmasks it.
    public var isAutomasked: Bool { flags & UInt32(VFIO_IRQ_INFO_AUTOMASKED) != 0 }
}

/// IRQ indices of a vfio-pci device.
public enum PCIIRQ {
    /// Legacy INTx (one vector, level-triggered, automasked).
    public static let intx = UInt32(VFIO_PCI_INTX_IRQ_INDEX)
    /// MSI.
    public static let msi = UInt32(VFIO_PCI_MSI_IRQ_INDEX)
    /// MSI-X.
    public static let msix = UInt32(VFIO_PCI_MSIX_IRQ_INDEX)
    /// AER error notification.
    public static let err = UInt32(VFIO_PCI_ERR_IRQ_INDEX)
    /// Device release request (the host wants the device back).
    public static let req = UInt32(VFIO_PCI_REQ_IRQ_INDEX)
    /// A short name for an index, for messages ("msix").
    public static func name(_ index: UInt32) -> String {
        switch index {
        case intx: "INTx"
        case msi: "MSI"
        case msix: "MSI-X"
        case err: "ERR"
        case req: "REQ"
        default: "IRQ \(index)"
        }
    }
}

/// An eventfd the kernel signals when an interrupt fires. Closed exactly once, when it goes.
public final class EventFD {
    let owned: OwnedFileDescriptor
    /// The descriptor, borrowed: valid while this object lives; do not close it.
    public var fd: FileDescriptor { owned.borrowed }

    /// A new close-on-exec eventfd with count 0.
    public init() throws(VFIOError) {
        let raw = cuapi_eventfd(0, CUAPI_EFD_CLOEXEC)
        guard raw >= 0 else { throw .system(operation: "eventfd", errno: Errno(rawValue: errno)) }
        owned = OwnedFileDescriptor(rawValue: raw)
    }

    /// Waits up to `milliseconds` for the counter to become non-zero; returns and resets it.
    public func wait(milliseconds: Int32) throws(VFIOError) -> UInt64 {
        var entry = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        // A retry after EINTR waits the whole time again, as before.
        let ready = try SystemCall.value({ poll(&entry, 1, milliseconds) }) {
            VFIOError.system(operation: "poll on an eventfd", errno: $0)
        }
        guard ready > 0 else { throw .timedOut("no interrupt within \(milliseconds) ms") }
        return try take() ?? 0
    }

    /// The counter if non-zero (and resets it), without waiting.
    public func take() throws(VFIOError) -> UInt64? {
        var entry = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        guard poll(&entry, 1, 0) > 0 else { return nil }
        var value: UInt64 = 0
        let count = withUnsafeMutableBytes(of: &value) { bytes in
            // Safety: an eventfd read moves exactly 8 bytes into the 8-byte buffer.
            Glibc.read(fd.rawValue, bytes.baseAddress, 8)
        }
        guard count == 8 else { throw .system(operation: "read of an eventfd", errno: Errno(rawValue: errno)) }
        return value
    }
}

extension VFIODevice {
    /// VFIO_DEVICE_SET_IRQS: deliver vectors start..<start+count of `index` to these eventfds
    /// (DATA_EVENTFD | ACTION_TRIGGER). For MSI/MSI-X this also enables them in the device.
    public func setIRQTriggers(_ index: UInt32, start: UInt32 = 0, eventFDs: [EventFD]) throws(VFIOError) {
        try setIRQs(index, flags: UInt32(VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER), start: start,
                     count: UInt32(eventFDs.count), data: eventFDs.map { $0.fd.rawValue })
    }

    /// Disables every vector of `index` (DATA_NONE | ACTION_TRIGGER with count 0).
    public func disableIRQs(_ index: UInt32) throws(VFIOError) {
        try setIRQs(index, flags: UInt32(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER), start: 0, count: 0, data: [])
    }

    /// Signals vectors start..<start+count of `index` from the kernel side (DATA_NONE |
    /// ACTION_TRIGGER with a count): a loopback through the same eventfds a device interrupt
    /// reaches, to check the wiring on any device without making it interrupt.
    public func triggerIRQs(_ index: UInt32, start: UInt32 = 0, count: UInt32 = 1) throws(VFIOError) {
        guard count > 0 else { return }
        try setIRQs(index, flags: UInt32(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER), start: start, count: count, data: [])
    }

    /// A signal on `eventFD` unmasks INTx (DATA_EVENTFD | ACTION_UNMASK): KVM's irqfd resample
    /// eventfd goes here, so the guest's EOI unmasks the line without userspace.
    public func setINTxUnmaskEventFD(_ eventFD: EventFD) throws(VFIOError) {
        try setIRQs(PCIIRQ.intx, flags: UInt32(VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK), start: 0, count: 1,
                    data: [eventFD.fd.rawValue])
    }

    /// INTx is masked by the kernel when it fires (automasked): unmask it for the next one.
    public func unmaskINTx() throws(VFIOError) {
        try setIRQs(PCIIRQ.intx, flags: UInt32(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK), start: 0, count: 1, data: [])
    }

    private func setIRQs(_ index: UInt32, flags: UInt32, start: UInt32, count: UInt32, data: [Int32]) throws(VFIOError) {
        var bytes = try irqSetBytes(index: index, flags: flags, start: start, count: count, eventFDs: data)
        // Safety: `bytes` is a vfio_irq_set with its payload, argsz bytes long.
        try ioctlBytes(fd, CVFIO_DEVICE_SET_IRQS, &bytes,
                       "VFIO_DEVICE_SET_IRQS(\(PCIIRQ.name(index)), count \(count)) on \(address)")
    }
}

/// A struct vfio_irq_set followed by its data[] payload (`eventFDs`, one s32 each; none for
/// DATA_NONE), with argsz covering both (`FlexibleArrayBuffer`: the payload starts where the
/// compiler puts data[]).
func irqSetBytes(index: UInt32, flags: UInt32, start: UInt32, count: UInt32, eventFDs: [Int32]) throws(VFIOError) -> [UInt8] {
    var head = vfio_irq_set()
    head.flags = flags
    head.index = index
    head.start = start
    head.count = count
    return try flexibleArray(header: head, elements: eventFDs, arrayOffset: Int(CVFIO_IRQ_SET_DATA_OFFSET), argsz: \.argsz).bytes
}
