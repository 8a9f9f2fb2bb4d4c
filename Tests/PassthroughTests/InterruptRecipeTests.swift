import Testing
import VFIO
@testable import Passthrough
@testable import TestKit

/// The register recipes that make test devices interrupt, and the memlock rule: pure, so every
/// case is checked here; the lab shows them against the real devices and kernel.
@Suite("Test-device interrupt recipes")
struct InterruptRecipeTests {
    @Test func knownDevicesAndIndices() {
        #expect(TestDeviceInterrupts.forDevice(vendor: 0x1234, device: 0x11e8, index: PCIIRQ.intx)?.vectors == 1)
        #expect(TestDeviceInterrupts.forDevice(vendor: 0x1234, device: 0x11e8, index: PCIIRQ.msi)?.vectors == 1)
        #expect(TestDeviceInterrupts.forDevice(vendor: 0x1234, device: 0x11e8, index: PCIIRQ.msix) == nil)
        #expect(TestDeviceInterrupts.forDevice(vendor: 0x8086, device: 0x10d3, index: PCIIRQ.msix)?.vectors == 5)
        #expect(TestDeviceInterrupts.forDevice(vendor: 0x8086, device: 0x10d3, index: PCIIRQ.intx)?.vectors == 1)
        #expect(TestDeviceInterrupts.forDevice(vendor: 0x8086, device: 0x10d3, index: PCIIRQ.err) == nil)
        #expect(TestDeviceInterrupts.forDevice(vendor: 0x1b36, device: 0x0010, index: PCIIRQ.msix) == nil)
    }

    @Test func eduRaisesAndAcknowledgesTheTestBit() throws {
        let edu = try #require(TestDeviceInterrupts.forDevice(vendor: 0x1234, device: 0x11e8, index: PCIIRQ.intx))
        #expect(edu.setup().isEmpty)
        #expect(edu.raise(vector: 0) == [RegisterWrite(bar: 0, offset: 0x60, value: 1)])
        #expect(edu.acknowledge(vector: 0) == [RegisterWrite(bar: 0, offset: 0x64, value: 1)])
    }

    /// IVAR routes cause i to vector i (valid bit set), each raise sets exactly one routed
    /// cause, and the causes are distinct, so a vector can only be raised by its own write.
    @Test func e1000eRoutesEachCauseToItsOwnVector() throws {
        let nic = try #require(TestDeviceInterrupts.forDevice(vendor: 0x8086, device: 0x10d3, index: PCIIRQ.msix))
        let setup = nic.setup()
        // Masked and cleared first, so nothing the device set on its own fires at setup.
        #expect(setup.prefix(2) == [RegisterWrite(bar: 0, offset: 0xd8, value: 0xffff_ffff),
                                    RegisterWrite(bar: 0, offset: 0xc0, value: 0xffff_ffff)])
        let ivar = try #require(setup.first { $0.offset == 0xe4 }).value
        for vector in 0..<5 {
            let field = (ivar >> UInt64(4 * vector)) & 0xf
            #expect(field == 0x8 | UInt64(vector), "IVAR field \(vector)")
        }
        let mask = try #require(setup.first { $0.offset == 0xd0 }).value
        #expect(mask == 0x01f0_0000)
        let raised = (0..<5).map { nic.raise(vector: $0) }
        #expect(Set(raised.map { $0.first?.value ?? 0 }).count == 5)
        for (vector, writes) in raised.enumerated() {
            #expect(writes.count == 1 && writes[0].offset == 0xc8)
            // The routed cause of this vector is set, and no other routed cause.
            let routed = writes[0].value & mask
            #expect(routed == E1000ERegisters.msixCauses[vector])
            #expect(nic.acknowledge(vector: vector) == [RegisterWrite(bar: 0, offset: 0xc0, value: writes[0].value)])
        }
        // "Other" travels with a cause it stands for (link status change).
        #expect(raised[4][0].value == E1000ERegisters.otherCause | E1000ERegisters.linkStatusChange)
        #expect(nic.teardown().contains(RegisterWrite(bar: 0, offset: 0xe4, value: 0)))
        // Its throttling timers (16.7 ms at most) run out before MSI-X is disabled.
        #expect(nic.settleMicroseconds >= 16_800)
        // Throttling off before any vector fires, and again at teardown (ITR, EITR0-4).
        for offset: UInt64 in [0xc4, 0xe8, 0xec, 0xf0, 0xf4, 0xf8] {
            let zero = RegisterWrite(bar: 0, offset: offset, value: 0)
            #expect(setup.firstIndex(of: zero).map { $0 < setup.firstIndex { $0.offset == 0xd0 }! } == true, "0x\(String(offset, radix: 16))")
            #expect(nic.teardown().contains(zero))
        }
    }

    @Test func e1000eINTxUsesOneEnabledCause() throws {
        let nic = try #require(TestDeviceInterrupts.forDevice(vendor: 0x8086, device: 0x10d3, index: PCIIRQ.intx))
        let mask = try #require(nic.setup().first { $0.offset == 0xd0 }).value
        let cause = try #require(nic.raise(vector: 0).first).value
        #expect(mask & cause != 0)
        #expect(nic.setup().contains { $0.offset == 0xe4 } == false)
    }
}

@Suite("RLIMIT_MEMLOCK as the kernel applies it")
struct MemlockRuleTests {
    @Test(arguments: [
        // limit, exempt, locked, already pinned by this container, new bytes, allowed
        (UInt64?.none, false, UInt64(0), UInt64(0), UInt64(1 << 40), true),
        (UInt64(1 << 20), true, 0, 0, 4 << 20, true),            // CAP_IPC_LOCK: no limit
        (UInt64(1 << 20), false, 0, 0, 4 << 20, false),
        (UInt64(8 << 20), false, 0, 0, 4 << 20, true),
        (UInt64(8 << 20), false, 0, 0, 8 << 20, true),             // exactly at the limit
        (UInt64(8 << 20), false, 4 << 20, 0, 4 << 20 + 4096, false), // mlocked pages count
        (UInt64(8 << 20), false, 0, 6 << 20, 4 << 20, false),      // VmLck unknown: pinned counts
        (UInt64(8 << 20), false, 2 << 20, 6 << 20, 2 << 20, true),
        (UInt64(8 << 20), false, 0, 0, UInt64.max, false),         // no overflow
    ] as [(UInt64?, Bool, UInt64, UInt64, UInt64, Bool)])
    func allows(limit: UInt64?, exempt: Bool, locked: UInt64, pinned: UInt64, bytes: UInt64, expected: Bool) {
        let rule = MemlockLimit(current: limit, maximum: limit, exempt: exempt, lockedBytes: locked)
        #expect(rule.allows(pinning: bytes, alreadyPinned: pinned) == expected)
    }
}
