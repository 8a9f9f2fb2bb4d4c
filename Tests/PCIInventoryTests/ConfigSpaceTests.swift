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
