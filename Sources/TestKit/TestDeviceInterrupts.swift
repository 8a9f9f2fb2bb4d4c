import Passthrough
import VFIO

/// How to make a known test device raise an interrupt on demand, as register writes: for
/// checking that a device's INTx, MSI or MSI-X vectors really arrive on their eventfds. Pure:
/// the caller does the writes (through VFIO region writes).
///
/// - QEMU's `edu` (1234:11e8): its interrupt-raise register (0x60) sets status bits and raises
///   MSI if enabled, else INTx; the acknowledge register (0x64) clears them and lowers INTx.
/// - Intel 82574L (`e1000e`, 8086:10d3), real or QEMU's: in MSI-X mode, IVAR routes its five
///   interrupt causes (RX queue 0/1, TX queue 0/1, "other") to vectors, and writing a cause to
///   ICS raises it; writing it to ICR clears it. With INTx or MSI, any enabled cause raises
///   the one interrupt.
public struct TestDeviceInterrupts: InterruptRaiser, Equatable {
    public enum Device: String, Sendable { case edu, e1000e }

    public let device: Device
    public let index: UInt32
    /// How many distinct vectors the device can be made to raise through this index.
    public let vectors: Int

    /// The recipe for a device (by PCI IDs) and an IRQ index, or nil when vfioctl does not
    /// know how to make that device raise that kind of interrupt.
    public static func forDevice(vendor: UInt16, device: UInt16, index: UInt32) -> TestDeviceInterrupts? {
        switch (vendor, device) {
        case (EduRegisters.vendorID, EduRegisters.deviceID):
            guard index == PCIIRQ.intx || index == PCIIRQ.msi else { return nil }
            return TestDeviceInterrupts(device: .edu, index: index, vectors: 1)
        case (E1000ERegisters.vendorID, E1000ERegisters.deviceID):
            if index == PCIIRQ.msix { return TestDeviceInterrupts(device: .e1000e, index: index, vectors: E1000ERegisters.msixCauses.count) }
            if index == PCIIRQ.intx || index == PCIIRQ.msi { return TestDeviceInterrupts(device: .e1000e, index: index, vectors: 1) }
            return nil
        default:
            return nil
        }
    }

    /// How long to wait after the last interrupt before the IRQ index may be disabled. QEMU 7.2's
    /// e1000e arms a throttling timer (EITR, at least 128 us there even when 0 is written) on
    /// every MSI-X message and aborts the whole VM if it expires after MSI-X was disabled; the
    /// longest EITR interval is 16.7 ms.
    public var settleMicroseconds: UInt32 { device == .e1000e && index == PCIIRQ.msix ? 20_000 : 0 }

    /// Writes that make the device ready to raise interrupts (after the eventfds are set).
    public func setup() -> [RegisterWrite] {
        switch device {
        case .edu:
            return []
        case .e1000e:
            if index == PCIIRQ.msix {
                // Cause i goes to vector i: each IVAR field is the vector with its valid bit.
                var ivar: UInt64 = 0
                for (vector, shift) in E1000ERegisters.ivarShifts.enumerated() {
                    ivar |= (E1000ERegisters.ivarValid | UInt64(vector)) << shift
                }
                let mask = E1000ERegisters.msixCauses.reduce(0, |)
                return quiet + [RegisterWrite(bar: 0, offset: E1000ERegisters.ivar, value: ivar),
                                RegisterWrite(bar: 0, offset: E1000ERegisters.ims, value: mask)]
            }
            return quiet + [RegisterWrite(bar: 0, offset: E1000ERegisters.ims, value: E1000ERegisters.transmitDescriptorWritten)]
        }
    }

    /// Writes that raise `vector`.
    public func raise(vector: Int) -> [RegisterWrite] {
        switch device {
        case .edu:
            return [RegisterWrite(bar: 0, offset: EduRegisters.interruptRaise, value: EduRegisters.testInterruptBit)]
        case .e1000e:
            return [RegisterWrite(bar: 0, offset: E1000ERegisters.ics, value: cause(vector))]
        }
    }

    /// Writes that clear the device's interrupt for `vector` (and lower INTx).
    public func acknowledge(vector: Int) -> [RegisterWrite] {
        switch device {
        case .edu:
            return [RegisterWrite(bar: 0, offset: EduRegisters.interruptAcknowledge, value: EduRegisters.testInterruptBit)]
        case .e1000e:
            return [RegisterWrite(bar: 0, offset: E1000ERegisters.icr, value: cause(vector))]
        }
    }

    /// Writes that leave the device quiet again.
    public func teardown() -> [RegisterWrite] {
        switch device {
        case .edu:
            return acknowledge(vector: 0)
        case .e1000e:
            return quiet + [RegisterWrite(bar: 0, offset: E1000ERegisters.ivar, value: 0)]
        }
    }

    /// Every cause masked and cleared: a cause the device set on its own before (the link
    /// status change of its autonegotiation, say) would otherwise fire at setup, or keep a
    /// later raise of the same vector from counting as new. Interrupt throttling as low as it
    /// goes: a host driver leaves ITR/EITR set (a PM reset keeps them); see `settleMicroseconds`.
    private var quiet: [RegisterWrite] {
        [RegisterWrite(bar: 0, offset: E1000ERegisters.imc, value: UInt64(UInt32.max)),
         RegisterWrite(bar: 0, offset: E1000ERegisters.icr, value: UInt64(UInt32.max)),
         RegisterWrite(bar: 0, offset: E1000ERegisters.itr, value: 0)]
            + (0..<E1000ERegisters.msixCauses.count).map { RegisterWrite(bar: 0, offset: E1000ERegisters.eitr(vector: $0), value: 0) }
    }

    func cause(_ vector: Int) -> UInt64 {
        guard index == PCIIRQ.msix else { return E1000ERegisters.transmitDescriptorWritten }
        let causes = E1000ERegisters.msixCauses
        let cause = causes[min(max(vector, 0), causes.count - 1)]
        // "Other" is only kept in ICR while one of the causes it stands for is set (QEMU 7.2
        // clears a lone OTHER at once): raise it with link status change.
        return cause == E1000ERegisters.otherCause ? cause | E1000ERegisters.linkStatusChange : cause
    }
}

/// The Intel 82574L registers `TestDeviceInterrupts` uses (BAR0 offsets from the datasheet).
public enum E1000ERegisters {
    public static let vendorID: UInt16 = 0x8086
    public static let deviceID: UInt16 = 0x10d3
    /// Interrupt cause read (write 1s to clear), cause set, mask set, mask clear, vector routing.
    public static let icr: UInt64 = 0x00c0
    public static let ics: UInt64 = 0x00c8
    public static let ims: UInt64 = 0x00d0
    public static let imc: UInt64 = 0x00d8
    public static let ivar: UInt64 = 0x00e4
    /// Interrupt throttling: ITR for INTx/MSI, one EITR per MSI-X vector.
    public static let itr: UInt64 = 0x00c4
    public static func eitr(vector: Int) -> UInt64 { 0x00e8 + 4 * UInt64(vector) }
    /// IVAR: a 4-bit field per cause (RX0, RX1, TX0, TX1, other): vector in bits 0-2, valid bit 3.
    public static let ivarShifts: [UInt64] = [0, 4, 8, 12, 16]
    public static let ivarValid: UInt64 = 0x8
    /// Cause bits routed by IVAR, in IVAR's field order.
    public static let otherCause: UInt64 = 1 << 24
    public static let msixCauses: [UInt64] = [1 << 20, 1 << 21, 1 << 22, 1 << 23, otherCause]
    public static let linkStatusChange: UInt64 = 1 << 2
    public static let transmitDescriptorWritten: UInt64 = 1 << 0
}
