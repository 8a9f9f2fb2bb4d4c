import KVM
import Testing
import VFIO
@testable import Passthrough

/// A fake VFIO config region: 256 bytes a test lays out, with a writable mask per byte the way a
/// device has one (the command register's decode and bus-master bits, say); records every write
/// that reaches it, so a test can see what the model kept from the device.
final class FakeConfigRegion: PCIConfigRegion {
    var bytes = [UInt8](repeating: 0, count: 256)
    var writable = [UInt8](repeating: 0, count: 256)
    var writes: [(offset: UInt64, value: UInt64, width: Int)] = []

    func readConfig(_ offset: UInt64, width: AccessWidth) throws(PassthroughError) -> UInt64 {
        (0..<width.rawValue).reduce(UInt64(0)) { $0 | UInt64(bytes[Int(offset) + $1]) << (8 * UInt64($1)) }
    }

    func writeConfig(_ value: UInt64, at offset: UInt64, width: AccessWidth) throws(PassthroughError) {
        writes.append((offset, value, width.rawValue))
        for index in 0..<width.rawValue {
            let at = Int(offset) + index, byte = UInt8(truncatingIfNeeded: value >> (8 * UInt64(index)))
            bytes[at] = (bytes[at] & ~writable[at]) | (byte & writable[at])
        }
    }

    func put(_ value: UInt32, at offset: Int, width: Int = 4) {
        for index in 0..<width { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(index))) }
    }

    /// An NVMe-like function: BAR0/1 a 16 KiB 64-bit BAR (MSI-X table at 0x2000, PBA at 0x3000),
    /// BAR2 32 I/O ports, BAR3 1 MiB prefetchable 32-bit, BAR4/5 8 GiB prefetchable 64-bit; the
    /// host's addresses in the registers (vfio-pci shows them); capabilities PM at 0x40, MSI
    /// (64-bit, per-vector masks, 8 vectors) at 0x50, Enhanced Allocation at 0x70, MSI-X (32
    /// entries) at 0x80.
    static func nvmeLike() -> FakeConfigRegion {
        let region = FakeConfigRegion()
        region.put(0x0010_1b36, at: 0)
        region.put(0x0010_0000, at: 4)          // command 0, status: capability list
        region.writable[4] = 0x07; region.writable[5] = 0x05
        region.put(0xfebf_0004, at: 0x10)       // BAR0: 64-bit memory, host address
        region.put(0x0000_0000, at: 0x14)
        region.put(0x0000_c001, at: 0x18)       // BAR2: I/O
        region.put(0xfe00_0008, at: 0x1c)       // BAR3: 32-bit prefetchable
        region.put(0x0000_000c, at: 0x20)       // BAR4: 64-bit prefetchable
        region.put(0x0000_0080, at: 0x24)
        region.put(0xfea0_0000, at: 0x30)       // host ROM address
        region.put(0x40, at: 0x34, width: 1)
        region.put(0x0003_5001, at: 0x40)       // PM -> 0x50
        region.put(0x0186_7005, at: 0x50)       // MSI -> 0x70: 64-bit, per-vector mask, MMC 8
        region.put(0x0001_8014, at: 0x70)       // EA -> 0x80
        region.put(0x001f_0011, at: 0x80)       // MSI-X, 32 entries, end of list
        region.put(0x0000_2000, at: 0x84)       // table: BAR0 + 0x2000
        region.put(0x0000_3000, at: 0x88)       // PBA: BAR0 + 0x3000
        return region
    }
}

/// Region sizes of `FakeConfigRegion.nvmeLike`: BARs 0-5, then the ROM.
let nvmeRegionSizes: [UInt64] = [0x4000, 0, 0x20, 0x10_0000, 0x2_0000_0000, 0, 0x1_0000]
/// RAM below 2 GiB, the APIC window, RAM above 4 GiB up to 6 GiB; 39 address bits.
let nvmeRules = GuestBARRules(reservedMemory: [0..<0x8000_0000, 0xfec0_0000..<0x1_0000_0000, 0x1_0000_0000..<0x1_8000_0000],
                              addressBits: 39)

func nvmeModel(_ region: FakeConfigRegion = .nvmeLike(), msix: Int = 32, msi: Int = 8,
               rom: ExpansionROMPolicy = .hidden) throws -> PCIDeviceModel {
    try PCIDeviceModel(config: region, regionSizes: nvmeRegionSizes, msixVectors: msix, msiVectors: msi, rules: nvmeRules, rom: rom)
}

extension PCIDeviceModel {
    mutating func write32(_ offset: UInt64, _ value: UInt32) throws -> [PCIDeviceAction] {
        try writeConfig(UInt64(value), at: offset, width: .dword)
    }
    func read32(_ offset: UInt64) throws -> UInt32 { UInt32(try readConfig(offset, width: .dword)) }
    /// Whether any action is a refusal.
    static func refusals(_ actions: [PCIDeviceAction]) -> [String] {
        actions.compactMap { if case let .refused(reason) = $0 { return reason }; return nil }
    }
    static func withoutRefusals(_ actions: [PCIDeviceAction]) -> [PCIDeviceAction] {
        actions.filter { if case .refused = $0 { return false }; return true }
    }
}

@Suite("Passthrough device model: config space")
struct PCIConfigSpaceTests {
    @Test func barsReadTheGuestsAddressesNotTheHostsWithTheirFlags() throws {
        let model = try nvmeModel()
        #expect(try model.read32(0x10) == 0x4)          // 64-bit, address 0 until the guest writes
        #expect(try model.read32(0x14) == 0)
        #expect(try model.read32(0x18) == 0x1)          // I/O
        #expect(try model.read32(0x1c) == 0x8)          // prefetchable, 32-bit
        #expect(try model.read32(0x20) == 0xc)          // prefetchable, 64-bit
        #expect(try model.read32(0x30) == 0)            // ROM hidden
        #expect(model.bars.count == 4)
        #expect(model.bars[0]?.kind == .memory64 && model.bars[4]?.kind == .memory64 && model.bars[4]?.isPrefetchable == true)
        #expect(model.bars[2]?.kind == .io && model.bars[3]?.kind == .memory32)
    }

    @Test func sizingReturnsTheSizeMaskWithTheFlagsForEveryKind() throws {
        var model = try nvmeModel()
        let region = model.config as! FakeConfigRegion
        for offset in stride(from: UInt64(0x10), to: 0x28, by: 4) { _ = try model.write32(offset, 0xffff_ffff) }
        #expect(try model.read32(0x10) == 0xffff_c004)  // 16 KiB
        #expect(try model.read32(0x14) == 0xffff_ffff)
        #expect(try model.read32(0x18) == 0xffff_ffe1)  // 32 ports
        #expect(try model.read32(0x1c) == 0xfff0_0008)  // 1 MiB
        #expect(try model.read32(0x20) == 0x0000_000c)  // 8 GiB: no address bit in the low dword
        #expect(try model.read32(0x24) == 0xffff_fffe)
        // None of it reached the device (its BARs keep the host's addresses).
        #expect(!region.writes.contains { (0x10..<0x28).contains($0.offset) })
        #expect(region.bytes[0x10] == 0x04 && region.bytes[0x13] == 0xfe)
    }

    @Test func byteAndWordWritesMergeIntoTheRegister() throws {
        var model = try nvmeModel()
        _ = try model.writeConfig(0xe0, at: 0x1f, width: .byte)
        _ = try model.writeConfig(0x1234, at: 0x1c, width: .word)   // below the size: dropped
        #expect(try model.read32(0x1c) == 0xe000_0008)
        #expect(try model.readConfig(0x1e, width: .word) == 0xe000)
        #expect(try model.readConfig(0x1f, width: .byte) == 0xe0)
    }

    @Test func theUnimplementedBARAndTheHiddenROMIgnoreWrites() throws {
        var model = try nvmeModel()
        _ = try model.write32(0x30, 0xffff_ffff)
        #expect(try model.read32(0x30) == 0)
        var served = try nvmeModel(rom: .served)
        _ = try served.write32(0x30, 0xffff_f800)
        #expect(try served.read32(0x30) == 0xffff_0000)  // 64 KiB, enable bit not written
        _ = try served.write32(0x30, 0xc000_0001)
        #expect(try served.read32(0x30) == 0xc000_0001)
    }

    @Test func theCommandRegisterPassesThroughAndTheDeviceDecidesWhatSticks() throws {
        var model = try nvmeModel()
        let region = model.config as! FakeConfigRegion
        _ = try model.writeConfig(0xffff, at: 0x04, width: .word)
        #expect(region.writes.contains { $0.offset == 0x04 && $0.value == 0xffff })
        #expect(model.command == 0x0507)
        #expect(try model.readConfig(0x04, width: .word) == 0x0507)
    }

    @Test func hiddenCapabilitiesAreUnlinkedReadZeroAndRefuseWrites() throws {
        var model = try nvmeModel()
        let region = model.config as! FakeConfigRegion
        var visible: [UInt64] = []
        var pointer = try model.readConfig(0x34, width: .byte)
        while pointer != 0, visible.count < 10 {
            visible.append(pointer)
            pointer = try model.readConfig(pointer + 1, width: .byte)
        }
        #expect(visible == [0x40, 0x50, 0x80])
        #expect(try model.read32(0x70) == 0)
        let actions = try model.write32(0x74, 0x1234_5678)
        #expect(PCIDeviceModel.refusals(actions).count == 1)
        #expect(!region.writes.contains { $0.offset == 0x74 })
        // Without hiding, the list is the device's.
        let plain = try PCIDeviceModel(config: FakeConfigRegion.nvmeLike(), regionSizes: nvmeRegionSizes, msixVectors: 32, msiVectors: 8,
                                       rules: nvmeRules, hiddenCapabilities: [])
        #expect(try plain.readConfig(0x51, width: .byte) == 0x70)
    }

    @Test func theMSIXCapabilityIsEmulatedAndItsOffsetsComeFromTheDevice() throws {
        var model = try nvmeModel()
        let region = model.config as! FakeConfigRegion
        #expect(try model.read32(0x80) == 0x001f_0011)
        #expect(try model.read32(0x84) == 0x2000 && model.read32(0x88) == 0x3000)
        _ = try model.write32(0x84, 0xffff_ffff)           // read-only
        #expect(try model.read32(0x84) == 0x2000)
        let actions = try model.writeConfig(0xc000, at: 0x82, width: .word)   // enable + function mask
        #expect(actions == [.interrupt(.enable(index: PCIIRQ.msix, vectors: 32))])
        #expect(try model.readConfig(0x82, width: .word) == 0xc01f)
        #expect(!region.writes.contains { (0x80..<0x8c).contains($0.offset) })
    }

    @Test func accessesHardwareCannotMakeReadAllOnesOrAreRefused() throws {
        var model = try nvmeModel()
        #expect(try model.readConfig(0x12, width: .dword) == 0xffff_ffff)
        #expect(try model.readConfig(0x10, width: .qword) == .max)
        #expect(PCIDeviceModel.refusals(try model.writeConfig(1, at: 0x11, width: .word)).count == 1)
        #expect(try model.readConfig(0x100, width: .dword) == 0xffff_ffff)
    }

    @Test func bridgesAndImpossibleBARSizesAreRefusedWhenTheModelIsMade() throws {
        let bridge = FakeConfigRegion.nvmeLike()
        bridge.bytes[0x0e] = 1
        #expect(throws: PassthroughError.self) { try nvmeModel(bridge) }
        #expect(throws: PassthroughError.self) {
            try PCIDeviceModel(config: FakeConfigRegion.nvmeLike(), regionSizes: [0x3000], msixVectors: 0, msiVectors: 0, rules: nvmeRules)
        }
        let looped = FakeConfigRegion.nvmeLike()
        looped.bytes[0x81] = 0x40                         // MSI-X -> PM: a loop
        let model = try nvmeModel(looped)
        #expect(model.capabilities.count == 4)
    }
}

@Suite("Passthrough device model: BAR placement on guest writes")
struct GuestBARPlacementTests {
    /// BAR0 at 0xe000_0000, BAR3 at 0xe010_0000, BAR4 at 0x2_0000_0000 (above RAM), I/O at 0xc000.
    static func assigned() throws -> PCIDeviceModel {
        var model = try nvmeModel()
        _ = try model.write32(0x10, 0xe000_0000)
        _ = try model.write32(0x14, 0)
        _ = try model.write32(0x18, 0xc000)
        _ = try model.write32(0x1c, 0xe010_0000)
        _ = try model.write32(0x20, 0)
        _ = try model.write32(0x24, 0x2)
        return model
    }

    @Test func decodeOnMapsEveryBARAtTheGuestsAddressAndOffUnmapsThem() throws {
        var model = try Self.assigned()
        #expect(model.mapped.isEmpty)
        let on = try model.writeConfig(0x3, at: 0x04, width: .word)
        #expect(on == [.mapBAR(bar: 0, guestAddress: 0xe000_0000), .mapBAR(bar: 2, guestAddress: 0xc000),
                       .mapBAR(bar: 3, guestAddress: 0xe010_0000), .mapBAR(bar: 4, guestAddress: 0x2_0000_0000)])
        #expect(model.locate(0xe000_2008, length: 4, io: false)! == (0, 0x2008))
        #expect(model.locate(0xc010, length: 2, io: true)! == (2, 0x10))
        #expect(model.locate(0xe000_3ffe, length: 4, io: false) == nil)       // straddles the end
        let memoryOff = try model.writeConfig(0x1, at: 0x04, width: .word)
        #expect(memoryOff == [.unmapBAR(bar: 0, guestAddress: 0xe000_0000), .unmapBAR(bar: 3, guestAddress: 0xe010_0000),
                              .unmapBAR(bar: 4, guestAddress: 0x2_0000_0000)])
        #expect(model.mapped == [2: 0xc000])
    }

    @Test func movingADecodingBARDeletesTheOldPlaceAndAddsTheNew() throws {
        var model = try Self.assigned()
        _ = try model.writeConfig(0x2, at: 0x04, width: .word)
        #expect(try model.write32(0x10, 0xe020_0000) == [.unmapBAR(bar: 0, guestAddress: 0xe000_0000), .mapBAR(bar: 0, guestAddress: 0xe020_0000)])
        // A 64-bit BAR moves in two steps, each decoded as hardware would.
        let high = try model.write32(0x14, 0x5)
        #expect(high == [.unmapBAR(bar: 0, guestAddress: 0xe020_0000), .mapBAR(bar: 0, guestAddress: 0x5_e020_0000)])
        #expect(try model.write32(0x14, 0x5).isEmpty)        // same place: nothing to do
    }

    @Test func garbageAddressesAreKeptInTheRegisterButNeverMapped() throws {
        var model = try Self.assigned()
        _ = try model.writeConfig(0x2, at: 0x04, width: .word)
        // Onto RAM: the old slot goes, nothing is added, one log line.
        let ram = try model.write32(0x1c, 0x1000_0000)
        #expect(PCIDeviceModel.withoutRefusals(ram) == [.unmapBAR(bar: 3, guestAddress: 0xe010_0000)])
        #expect(PCIDeviceModel.refusals(ram).count == 1 && PCIDeviceModel.refusals(ram)[0].contains("reserved guest memory"))
        #expect(try model.read32(0x1c) == 0x1000_0008)
        #expect(try model.write32(0x1c, 0x1000_0000).isEmpty)   // logged once per address
        // Beyond the 39-bit address width.
        let far = try model.write32(0x24, 0x80)
        #expect(PCIDeviceModel.withoutRefusals(far) == [.unmapBAR(bar: 4, guestAddress: 0x2_0000_0000)])
        #expect(PCIDeviceModel.refusals(far).first?.contains("39-bit") == true)
        // Unaligned: the bits below the size are not kept, so it lands aligned.
        let unaligned = try model.write32(0x10, 0xe000_1234)
        #expect(try model.read32(0x10) == 0xe000_0004)
        #expect(unaligned == [.unmapBAR(bar: 0, guestAddress: 0xe000_0000), .mapBAR(bar: 0, guestAddress: 0xe000_0000)] || unaligned.isEmpty)
        #expect(model.mapped[0] == 0xe000_0000)
        // Onto another BAR of the same device.
        _ = try model.write32(0x1c, 0xe000_0000)
        #expect(model.mapped[3] == nil && model.mapped[0] == 0xe000_0000)
        // Back to a good place: mapped again.
        #expect(try model.write32(0x1c, 0xe030_0000) == [.mapBAR(bar: 3, guestAddress: 0xe030_0000)])
    }

    @Test func sizingABARInUseUnmapsItUntilTheAddressIsBack() throws {
        var model = try Self.assigned()
        _ = try model.writeConfig(0x2, at: 0x04, width: .word)
        let sizing = try model.write32(0x1c, 0xffff_ffff)   // 0xfff0_0000: inside the APIC window
        #expect(PCIDeviceModel.withoutRefusals(sizing) == [.unmapBAR(bar: 3, guestAddress: 0xe010_0000)])
        #expect(try model.read32(0x1c) == 0xfff0_0008)
        #expect(try model.write32(0x1c, 0xe010_0000) == [.mapBAR(bar: 3, guestAddress: 0xe010_0000)])
        // Sizing the low dword of a 64-bit BAR in use puts it in the APIC window: unmapped too.
        let low = try model.write32(0x10, 0xffff_ffff)
        #expect(try model.read32(0x10) == 0xffff_c004)
        #expect(PCIDeviceModel.withoutRefusals(low) == [.unmapBAR(bar: 0, guestAddress: 0xe000_0000)])
    }

    @Test func theServedROMMapsOnlyWhileEnabledWithMemoryDecode() throws {
        var model = try nvmeModel(rom: .served)
        _ = try model.writeConfig(0x2, at: 0x04, width: .word)
        _ = try model.write32(0x30, 0xe040_0000)
        #expect(model.mapped[GuestBAR.romIndex] == nil)
        #expect(try model.write32(0x30, 0xe040_0001) == [.mapBAR(bar: GuestBAR.romIndex, guestAddress: 0xe040_0000)])
        #expect(model.locate(0xe040_0010, length: 4, io: false)! == (GuestBAR.romIndex, 0x10))
    }

    @Test func rulesCoverIOPortsAndWrapping() {
        let rules = GuestBARRules(reservedMemory: [], addressBits: 64, reservedPorts: [0..<0x1000, 0xcf8..<0xd00])
        var io = GuestBAR(index: 2, kind: .io, size: 0x100)!
        io.write(0x0c00, upper: false)
        #expect(rules.problem(with: io, others: [])?.contains("reserved I/O") == true)
        io.write(0xff00, upper: false)
        #expect(rules.problem(with: io, others: []) == nil)
        var top = GuestBAR(index: 0, kind: .memory64, size: 0x1000)!
        top.write(0xffff_f000, upper: false)
        top.write(0xffff_ffff, upper: true)
        #expect(rules.problem(with: top, others: [])?.contains("wraps") == true)
        top.write(0xffff_fffe, upper: true)
        #expect(rules.problem(with: top, others: []) == nil)
        #expect(GuestBAR(index: 0, kind: .memory32, size: 0x3000) == nil)
        #expect(GuestBAR(index: 0, kind: .rom, size: 0x400) == nil)
    }
}

@Suite("Passthrough device model: MSI-X and MSI")
struct MessageInterruptTests {
    static let message0 = MSIMessage(addressLow: 0xfee0_0000, data: 0x41)

    static func enabledMSIX(deliverable: Int = 32) throws -> PCIDeviceModel {
        var model = try nvmeModel(msix: deliverable)
        _ = try model.writeConfig(0x8000, at: 0x82, width: .word)
        return model
    }

    @Test func aVectorIsRoutedOnlyWhileEnabledUnmaskedAndTheFunctionUnmasked() throws {
        var model = try Self.enabledMSIX()
        // Programmed while masked (reset state): nothing to deliver yet.
        #expect(model.writeBAR(0, offset: 0x2000, width: .qword, value: 0xfee0_0000) == [])
        #expect(model.writeBAR(0, offset: 0x2008, width: .dword, value: 0x41) == [])
        #expect(model.readBAR(0, offset: 0x2000, width: .dword) == 0xfee0_0000)
        #expect(model.readBAR(0, offset: 0x200c, width: .dword) == 1)
        #expect(model.writeBAR(0, offset: 0x200c, width: .dword, value: 0) == [.interrupt(.route(index: PCIIRQ.msix, vector: 0, message: Self.message0))])
        // Function mask: every vector stops; clearing it brings them back.
        #expect(try model.writeConfig(0xc000, at: 0x82, width: .word) == [.interrupt(.unroute(index: PCIIRQ.msix, vector: 0))])
        #expect(try model.writeConfig(0x8000, at: 0x82, width: .word) == [.interrupt(.route(index: PCIIRQ.msix, vector: 0, message: Self.message0))])
        // A new message while delivered: the route follows.
        let moved = MSIMessage(addressLow: 0xfee0_1000, data: 0x42)
        #expect(model.writeBAR(0, offset: 0x2000, width: .dword, value: 0xfee0_1000)
                == [.interrupt(.route(index: PCIIRQ.msix, vector: 0, message: MSIMessage(addressLow: 0xfee0_1000, data: 0x41)))])
        #expect(model.writeBAR(0, offset: 0x2008, width: .dword, value: 0x42) == [.interrupt(.route(index: PCIIRQ.msix, vector: 0, message: moved))])
        // Masking the vector, then disabling MSI-X.
        #expect(model.writeBAR(0, offset: 0x200c, width: .dword, value: 1) == [.interrupt(.unroute(index: PCIIRQ.msix, vector: 0))])
        _ = model.writeBAR(0, offset: 0x201c, width: .dword, value: 0)
        #expect(try model.writeConfig(0, at: 0x82, width: .word)
                == [.interrupt(.unroute(index: PCIIRQ.msix, vector: 1)), .interrupt(.disable(index: PCIIRQ.msix))])
    }

    @Test func vectorsBeyondWhatVFIODeliversStaySilentAndAreLogged() throws {
        var model = try Self.enabledMSIX(deliverable: 4)
        let actions = model.writeBAR(0, offset: 10 * 16 + 0x200c, width: .dword, value: 0) ?? []
        #expect(PCIDeviceModel.withoutRefusals(actions).isEmpty)
        #expect(PCIDeviceModel.refusals(actions).count == 1)
        // Entries past the table's end are not the table: the device's page answers them.
        #expect(model.readBAR(0, offset: 0x2000 + 32 * 16, width: .dword) == nil)
        var none = try nvmeModel(msix: 0)
        #expect(PCIDeviceModel.refusals(try none.writeConfig(0x8000, at: 0x82, width: .word)).count == 1)
        #expect(try none.readConfig(0x82, width: .word) == 0x001f)
    }

    @Test func badTableAccessesAndPBAWritesAreRefusedAndPendingBitsRead() throws {
        var model = try Self.enabledMSIX()
        #expect(PCIDeviceModel.refusals(model.writeBAR(0, offset: 0x2002, width: .dword, value: 0) ?? []).count == 1)
        #expect(PCIDeviceModel.refusals(model.writeBAR(0, offset: 0x2000, width: .byte, value: 0) ?? []).count == 1)
        #expect(model.readBAR(0, offset: 0x2001, width: .word) == 0xffff)
        #expect(PCIDeviceModel.refusals(model.writeBAR(0, offset: 0x3000, width: .qword, value: 1) ?? []).count == 1)
        model.setMSIXPending(3, true)
        model.setMSIXPending(33, true)   // no such vector
        #expect(model.readBAR(0, offset: 0x3000, width: .qword) == 0x8)
        // Unmasking a pending vector routes it and clears the bit (KVM injects what waited).
        _ = model.writeBAR(0, offset: 3 * 16 + 0x200c, width: .dword, value: 0)
        #expect(model.readBAR(0, offset: 0x3000, width: .dword) == 0)
        // Other offsets of the BAR are the device's.
        #expect(model.readBAR(0, offset: 0x10, width: .dword) == nil)
        #expect(model.writeBAR(0, offset: 0x10, width: .dword, value: 1) == nil)
    }

    @Test func msiEnablesWhatTheGuestAsksUpToWhatTheDeviceHas() throws {
        var model = try nvmeModel()
        #expect(try model.readConfig(0x52, width: .word) == 0x0186)
        _ = try model.write32(0x54, 0xfee0_0000)
        _ = try model.write32(0x5c, 0x40)
        _ = try model.write32(0x60, 0xfe)            // vectors 1-7 masked
        let on = try model.writeConfig(0x0031, at: 0x52, width: .word)   // enable, MME 8 vectors
        #expect(on == [.interrupt(.enable(index: PCIIRQ.msi, vectors: 8)),
                       .interrupt(.route(index: PCIIRQ.msi, vector: 0, message: MSIMessage(addressLow: 0xfee0_0000, data: 0x40)))])
        #expect(try model.readConfig(0x52, width: .word) == 0x01b7)
        let unmask = try model.write32(0x60, 0xfc)
        #expect(unmask == [.interrupt(.route(index: PCIIRQ.msi, vector: 1, message: MSIMessage(addressLow: 0xfee0_0000, data: 0x41)))])
        // 32 vectors asked of an 8-vector device: refused down to 8, as the spec allows.
        let tooMany = try model.writeConfig(0x0051, at: 0x52, width: .word)
        #expect(PCIDeviceModel.refusals(tooMany).count == 1)
        #expect(PCIDeviceModel.withoutRefusals(tooMany).isEmpty)
        #expect(try model.readConfig(0x52, width: .word) == 0x01b7)
        let off = try model.writeConfig(0, at: 0x52, width: .word)
        #expect(off == [.interrupt(.unroute(index: PCIIRQ.msi, vector: 0)), .interrupt(.unroute(index: PCIIRQ.msi, vector: 1)),
                        .interrupt(.disable(index: PCIIRQ.msi))])
    }

    @Test func msixStateMachineFollowsThePCISpecForEveryMaskCombination() {
        // Every combination of enable, function mask and vector mask: delivered only with enable
        // on, function mask off and vector mask off.
        for enable in [false, true] {
            for functionMask in [false, true] {
                for vectorMask in [false, true] {
                    var table = MSIXVectorTable(tableSize: 2, deliverable: 2)
                    _ = table.writeTable(offset: 0x0c, width: .dword, value: vectorMask ? 1 : 0)
                    _ = table.writeMessageControl((enable ? 0x8000 : 0) | (functionMask ? 0x4000 : 0))
                    #expect(table.isDelivered(0) == (enable && !functionMask && !vectorMask))
                    #expect((table.routed[0] != nil) == table.isDelivered(0))
                    #expect(!table.isDelivered(1))
                }
            }
        }
    }
}
