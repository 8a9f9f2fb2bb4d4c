// The two devices every small VMM has: a 16550 UART on 0x3f8 (output only, no interrupt line: it
// answers Linux's THRE test as a UART that does not reassert THRE, so Linux sends with its backup
// timer instead of waiting for an interrupt) and a PCI host bridge reached through conf1
// (0xcf8/0xcfc) with the passed-through function at 00:01.0. The function itself is vfioctl's
// `VFIOPCIDevice`.
#if canImport(Glibc)
import Glibc
#endif
import Passthrough
import VFIO

final class Serial {
    static let base: UInt16 = 0x3f8
    private var registers = [UInt8](repeating: 0, count: 8)   // IER, LCR, MCR, SCR as written
    private var divisor: [UInt8] = [0x0c, 0]
    private var line: [UInt8] = []
    private var threTested = false, threPending = false
    /// Kernel messages that mean the guest is done (no ACPI: it halts instead of powering off).
    var sawPowerOff = false
    var onLine: (String) -> Void = { _ in }

    func write(_ offset: UInt16, _ value: UInt8) {
        let dlab = registers[3] & 0x80 != 0
        switch offset {
        case 0 where dlab: divisor[0] = value
        case 1 where dlab: divisor[1] = value
        case 0:
            if value == 0x0a {
                let text = String(decoding: line, as: UTF8.self)
                emit(text)
                if text.contains("reboot: Power down") || text.contains("System halted") || text.contains("reboot: Restarting system") { sawPowerOff = true }
                onLine(text)
                line = []
            } else if line.count < 4096 {
                line.append(value)
            }
        case 2: break                        // FCR
        case 1 where value == 0x02 && !threTested:   // IER = THRI: Linux's THRE test, once
            registers[1] = value
            threTested = true
            threPending = true
        default: registers[Int(offset)] = value
        }
    }

    func read(_ offset: UInt16) -> UInt8 {
        let dlab = registers[3] & 0x80 != 0
        switch offset {
        case 0: return dlab ? divisor[0] : 0
        case 1: return dlab ? divisor[1] : registers[1]
        case 2:                              // FIFOs on; THRE once for the test, then no interrupt
            defer { threPending = false }
            return threPending ? 0xc2 : 0xc1
        case 5: return 0x60                  // transmitter empty
        case 6:
            let mcr = registers[4]
            guard mcr & 0x10 != 0 else { return 0xb0 }   // DCD, DSR, CTS
            // Loopback: the modem outputs show up as inputs (Linux's UART probe checks this).
            return (mcr & 0x08 != 0 ? 0x80 : 0) | (mcr & 0x04 != 0 ? 0x40 : 0) | (mcr & 0x01 != 0 ? 0x20 : 0) | (mcr & 0x02 != 0 ? 0x10 : 0)
        default: return registers[Int(offset)]
        }
    }
}

/// conf1 configuration cycles on bus 0: a host bridge at 00:00.0, the device at 00:01.0.
final class PCIHostBridge {
    static let addressPort: UInt16 = 0xcf8
    static let dataPort: UInt16 = 0xcfc
    private var address: UInt32 = 0
    let device: VFIOPCIDevice?
    /// Config cycles served (reads and writes).
    private(set) var cycles = 0

    init(device: VFIOPCIDevice?) { self.device = device }

    /// Host bridge config space: Intel vendor, class 06/00/00, header type 0.
    private func bridgeConfig(_ offset: UInt64) -> UInt32 {
        switch offset {
        case 0x00: return 0x0d57_8086
        case 0x08: return 0x0600_0000
        default: return 0
        }
    }

    /// The function an address selects and the register offset, or nil when nothing is there.
    private func target(_ port: UInt16) -> (function: Int, offset: UInt64)? {
        guard address & 0x8000_0000 != 0, (address >> 16) & 0xff == 0, (address >> 8) & 7 == 0 else { return nil }
        let slot = Int((address >> 11) & 0x1f)
        return (slot, UInt64(address & 0xfc) + UInt64(port - Self.dataPort))
    }

    func read(_ port: UInt16, size: Int) -> UInt64 {
        let mask: UInt64 = size == 4 ? 0xffff_ffff : (1 << UInt64(size * 8)) - 1
        if port == Self.addressPort, size == 4 { return UInt64(address) }
        guard (Self.dataPort..<Self.dataPort + 4).contains(port), let (slot, offset) = target(port),
              let width = AccessWidth(rawValue: size) else { return mask }
        cycles += 1
        switch slot {
        case 0: return UInt64(bridgeConfig(offset & ~3) >> (8 * UInt32(offset & 3))) & mask
        case 1: return device?.readConfig(offset, width: width) ?? mask
        default: return mask
        }
    }

    func write(_ port: UInt16, size: Int, value: UInt64) {
        if port == Self.addressPort, size == 4 { address = UInt32(truncatingIfNeeded: value); return }
        guard (Self.dataPort..<Self.dataPort + 4).contains(port), let (slot, offset) = target(port), slot == 1,
              let width = AccessWidth(rawValue: size) else { return }
        cycles += 1
        device?.writeConfig(value, at: offset, width: width)
    }
}
