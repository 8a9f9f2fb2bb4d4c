import Testing
@testable import PCIInventory

/// Builds config space images by hand: only the registers each test needs.
struct ConfigImage {
    var bytes = [UInt8](repeating: 0, count: 4096)
    mutating func put16(_ offset: Int, _ value: UInt16) {
        bytes[offset] = UInt8(value & 0xff); bytes[offset + 1] = UInt8(value >> 8)
    }
    mutating func put32(_ offset: Int, _ value: UInt32) {
        for byte in 0..<4 { bytes[offset + byte] = UInt8((value >> (8 * UInt32(byte))) & 0xff) }
    }
    /// A root port with a PCIe capability at 0x40 and ACS at 0x148 after an AER cap at 0x100.
    static func rootPort(acsCapability: UInt16?, acsControl: UInt16) -> ConfigImage {
        var image = ConfigImage()
        image.put16(0x00, 0x8086); image.put16(0x02, 0xa110)
        image.put16(0x06, 0x0010)                     // status: capability list
        image.put32(0x08, 0x0604_0000 | 0x06)         // class 060400, revision 6
        image.bytes[0x0e] = 0x81                      // multi-function bridge
        image.bytes[0x34] = 0x40
        image.bytes[0x40] = 0x10; image.bytes[0x41] = 0x00  // PCIe cap, end of list
        image.put16(0x42, 0x0042)                     // version 2, root port (4)
        if let acsCapability {
            image.put32(0x100, 0x0001 | 1 << 16 | 0x148 << 20)  // AER -> ACS
            image.put32(0x148, 0x000d | 1 << 16)                // ACS, end
            image.put16(0x14c, acsCapability)
            image.put16(0x14e, acsControl)
        } else {
            image.put32(0x100, 0x0001 | 1 << 16)
        }
        return image
    }
}

@Suite struct ConfigSpaceTests {
    @Test func decodesHeader() {
        let config = PCIConfigSpace(bytes: ConfigImage.rootPort(acsCapability: nil, acsControl: 0).bytes)
        #expect(config.vendorID == 0x8086 && config.deviceID == 0xa110)
        #expect(config.classCode == 0x060400 && config.revision == 6 && config.headerType == 1)
        #expect(config.expressPortType == .rootPort)
        #expect(config.accessControlServices == nil)
    }

    @Test func decodesACSAndJudgesIsolation() {
        let all: UInt16 = 0x5f
        let enabled = PCIConfigSpace(bytes: ConfigImage.rootPort(acsCapability: all, acsControl: 0x1d).bytes)
        let acs = enabled.accessControlServices
        #expect(acs?.supported == ACSControls(rawValue: 0x5f))
        #expect(acs?.enabled.names == ["SrcValid", "ReqRedir", "CmpltRedir", "UpstreamFwd"])
        #expect(acs?.isolates == true)

        let partly = PCIConfigSpace(bytes: ConfigImage.rootPort(acsCapability: all, acsControl: 0x01).bytes)
        #expect(partly.accessControlServices?.isolates == false)

        let off = PCIConfigSpace(bytes: ConfigImage.rootPort(acsCapability: all, acsControl: 0).bytes)
        #expect(off.accessControlServices?.enabled.isEmpty == true)
        #expect(off.accessControlServices?.isolates == false)
    }

    @Test func shortOrGarbageConfigDoesNotCrash() {
        #expect(PCIConfigSpace(bytes: Array(repeating: 0xff, count: 10)).vendorID == nil)
        #expect(PCIConfigSpace(bytes: []).expressPortType == nil)
        // A capability list that points at itself must end.
        var looping = ConfigImage()
        looping.put16(0x06, 0x0010)
        looping.bytes[0x34] = 0x40
        looping.bytes[0x40] = 0x05; looping.bytes[0x41] = 0x40
        looping.put32(0x100, 0x0001 | 0x100 << 20)
        let config = PCIConfigSpace(bytes: looping.bytes)
        #expect(config.capabilityOffset(0x10) == nil)
        #expect(config.accessControlServices == nil)
        // Conventional devices expose 256 bytes: no extended capabilities.
        #expect(PCIConfigSpace(bytes: Array(looping.bytes.prefix(256))).accessControlServices == nil)
    }
}

@Suite("MSI-X layout from config space")
struct MSIXLayoutTests {
    /// A config space with one capability, MSI-X at 0xa0: `vectors` entries, table in `tableBAR`
    /// at `tableOffset`, PBA in `pbaBAR` at `pbaOffset` (the low 3 bits of each dword are the BIR).
    static func config(vectors: Int, tableBAR: UInt32, tableOffset: UInt32, pbaBAR: UInt32, pbaOffset: UInt32) -> PCIConfigSpace {
        var bytes = [UInt8](repeating: 0, count: 256)
        bytes[0x06] = 0x10          // status: capability list
        bytes[0x34] = 0xa0
        bytes[0xa0] = 0x11          // MSI-X
        bytes[0xa1] = 0x00          // last
        let control = UInt16(vectors - 1)
        bytes[0xa2] = UInt8(control & 0xff); bytes[0xa3] = UInt8(control >> 8)
        for (at, value) in [(0xa4, tableOffset | tableBAR), (0xa8, pbaOffset | pbaBAR)] {
            for i in 0..<4 { bytes[at + i] = UInt8((value >> (8 * UInt32(i))) & 0xff) }
        }
        return PCIConfigSpace(bytes: bytes)
    }

    @Test func e1000eLayout() throws {
        // QEMU's e1000e: 5 vectors, table at BAR3 + 0, PBA at BAR3 + 0x2000.
        let layout = try #require(Self.config(vectors: 5, tableBAR: 3, tableOffset: 0, pbaBAR: 3, pbaOffset: 0x2000).msix)
        #expect(layout == MSIXLayout(vectors: 5, tableBAR: 3, tableOffset: 0, tableSize: 80, pbaBAR: 3, pbaOffset: 0x2000, pbaSize: 8))
        #expect(layout.trappedPages(bar: 3) == [0..<0x1000, 0x2000..<0x3000])
        #expect(layout.trappedPages(bar: 0).isEmpty)
    }

    @Test func largeTableSpansPagesAndSharesABarWithRegisters() throws {
        // 2048 vectors: a 32 KiB table at BAR0 + 0x3000, and a 256-byte PBA at BAR0 + 0xb800,
        // the page right after the table.
        let layout = try #require(Self.config(vectors: 2048, tableBAR: 0, tableOffset: 0x3000, pbaBAR: 0, pbaOffset: 0xb800).msix)
        #expect(layout.tableSize == 0x8000)
        #expect(layout.pbaSize == 256)
        #expect(layout.trappedPages(bar: 0) == [0x3000..<0xb000, 0xb000..<0xc000])
        // A table that ends mid-page takes the whole page.
        let odd = try #require(Self.config(vectors: 3, tableBAR: 2, tableOffset: 0x1ff8, pbaBAR: 4, pbaOffset: 0).msix)
        #expect(odd.trappedPages(bar: 2) == [0x1000..<0x3000])
        #expect(odd.trappedPages(bar: 4) == [0..<0x1000])
    }

    @Test func noCapabilityNoLayout() {
        var bytes = [UInt8](repeating: 0, count: 256)
        bytes[0x06] = 0x10; bytes[0x34] = 0x40; bytes[0x40] = 0x05 // MSI only
        #expect(PCIConfigSpace(bytes: bytes).msix == nil)
        #expect(PCIConfigSpace(bytes: []).msix == nil)
    }
}
