import Passthrough
import TextFormat
import VFIO

/// QEMU's `edu` teaching device (1234:11e8): the registers of its BAR0 the DMA probe uses.
public enum EduRegisters {
    public static let vendorID: UInt16 = 0x1234
    public static let deviceID: UInt16 = 0x11e8
    public static let identification: Int = 0x00
    public static let identificationValue: UInt32 = 0x0100_00ed
    /// Interrupt status (read), raise (write: sets status bits, raises MSI or INTx) and
    /// acknowledge (write: clears them, lowers INTx).
    public static let interruptStatus: UInt64 = 0x24
    public static let interruptRaise: UInt64 = 0x60
    public static let interruptAcknowledge: UInt64 = 0x64
    /// The status bit vfioctl raises for interrupt tests (edu's DMA completion uses 0x100).
    public static let testInterruptBit: UInt64 = 0x1
    public static let dmaSource: Int = 0x80
    public static let dmaDestination: Int = 0x88
    public static let dmaCount: Int = 0x90
    public static let dmaCommand: Int = 0x98
    /// DMA command bits: start (cleared by the device when done), direction, raise an IRQ.
    public static let commandStart: UInt64 = 1 << 0
    public static let commandToRAM: UInt64 = 1 << 1
    public static let commandInterrupt: UInt64 = 1 << 2
    /// The device's own buffer, as the DMA engine addresses it.
    public static let bufferAddress: UInt64 = 0x40000
    public static let bufferSize: UInt64 = 4096
    /// The longest transfer edu takes: one byte short of its buffer (see `EduDMATransfer`).
    public static let maxTransfer: UInt64 = bufferSize - 1
    /// edu's DMA mask.
    public static let dmaAddressBits = 28
    /// edu's DMA mask as the highest IOVA it reaches (a `VFIOContainer.mapDMA` limit).
    public static let dmaLimit: UInt64 = (1 << UInt64(dmaAddressBits)) - 1
}

/// One edu DMA transfer: between guest RAM (an IOVA) and the device's buffer.
public struct EduDMATransfer: Sendable, Equatable {
    public enum Direction: Sendable, Equatable { case ramToDevice, deviceToRAM }
    public var direction: Direction
    /// Where in RAM (an IOVA; with `GuestRAMDMAMapping`, a gpa).
    public var iova: UInt64
    /// Where in the device's buffer, from its start.
    public var bufferOffset: UInt64
    public var count: UInt64
    /// Whether edu raises its interrupt (MSI or INTx) when the transfer is done.
    public var raiseInterrupt: Bool

    public init(direction: Direction, iova: UInt64, bufferOffset: UInt64 = 0, count: UInt64, raiseInterrupt: Bool = false) {
        self.direction = direction
        self.iova = iova
        self.bufferOffset = bufferOffset
        self.count = count
        self.raiseInterrupt = raiseInterrupt
    }

    /// The register writes that start it, in order (the command last: it starts the engine,
    /// which ignores the other registers while it runs). Pure; checks what edu would reject
    /// or silently truncate (a count past its buffer, an IOVA past its 28-bit mask).
    public func registerWrites() throws(PassthroughError) -> [(offset: Int, value: UInt64)] {
        // QEMU's edu (as in Debian's QEMU 7.2) wants the transfer's end strictly inside the
        // buffer: one that ends at the buffer's last byte is a "hardware error" that aborts the
        // whole VM (seen in the lab), so the usable span is one byte short of the buffer.
        guard count > 0, bufferOffset < EduRegisters.bufferSize, count < EduRegisters.bufferSize - bufferOffset else {
            throw .dma("edu DMA of \(count) bytes at buffer offset \(bufferOffset.hex()) does not fit its \(EduRegisters.bufferSize)-byte buffer (edu needs the end strictly inside it: at most \(EduRegisters.maxTransfer) bytes from its start)")
        }
        try DMAReach.check(iova: iova, size: count, addressBits: EduRegisters.dmaAddressBits)
        let buffer = EduRegisters.bufferAddress + bufferOffset
        let (source, destination) = direction == .ramToDevice ? (iova, buffer) : (buffer, iova)
        let command = EduRegisters.commandStart | (direction == .deviceToRAM ? EduRegisters.commandToRAM : 0)
            | (raiseInterrupt ? EduRegisters.commandInterrupt : 0)
        return [(EduRegisters.dmaSource, source), (EduRegisters.dmaDestination, destination), (EduRegisters.dmaCount, count), (EduRegisters.dmaCommand, command)]
    }
}

/// Runs edu DMA transfers through register accesses (a BAR0 mapping, or a fake in tests).
public struct EduDMAEngine {
    public var load: (_ offset: Int) throws(PassthroughError) -> UInt64
    public var store: (_ value: UInt64, _ offset: Int) throws(PassthroughError) -> Void
    /// Sleeps between polls of the command register.
    public var pause: () -> Void

    public init(load: @escaping (Int) throws(PassthroughError) -> UInt64,
                store: @escaping (UInt64, Int) throws(PassthroughError) -> Void,
                pause: @escaping () -> Void) {
        self.load = load
        self.store = store
        self.pause = pause
    }

    /// Registers through an edu BAR0 mapping, 8 bytes at a time (edu takes 4 or 8 there).
    public static func through(_ bar0: VFIOAreaMapping, pause: @escaping () -> Void) -> EduDMAEngine {
        EduDMAEngine(
            load: { (offset) throws(PassthroughError) in try viaVFIO { () throws(VFIOError) in try bar0.load(.qword, at: offset) } },
            store: { (value, offset) throws(PassthroughError) in try viaVFIO { () throws(VFIOError) in try bar0.store(value, .qword, at: offset) } },
            pause: pause)
    }

    /// Starts the transfer and polls until the device clears the start bit; returns the polls
    /// it took. A transfer still running is refused (edu would ignore the new registers).
    @discardableResult
    public func run(_ transfer: EduDMATransfer, maxPolls: Int) throws(PassthroughError) -> Int {
        let writes = try transfer.registerWrites()
        guard try load(EduRegisters.dmaCommand) & EduRegisters.commandStart == 0 else {
            throw .dma("edu's DMA engine is busy with an earlier transfer")
        }
        for write in writes { try store(write.value, write.offset) }
        for poll in 1...max(maxPolls, 1) {
            if try load(EduRegisters.dmaCommand) & EduRegisters.commandStart == 0 { return poll }
            pause()
        }
        throw .timedOut("edu DMA (\(transfer.direction), \(transfer.count) bytes, IOVA \(transfer.iova.hex())) did not finish after \(maxPolls) polls")
    }
}
