/// Builds expansion ROM images byte by byte, as firmware vendors lay them out, so tests can
/// parse good ROMs and each kind of damage.
public struct FixtureROMImage: Sendable, Hashable {
    public enum Code: Sendable, Hashable {
        case legacyX86
        /// EFI image: machine type (0x8664 x64, 0xaa64 AArch64, 0x0ebc EBC) and subsystem (11 boot service driver).
        case efi(machine: UInt16, subsystem: UInt16 = 11)
    }

    public var vendorID: UInt16
    public var deviceID: UInt16
    public var classCode: UInt32
    public var code: Code
    /// Size in 512-byte blocks.
    public var blocks: Int
    public var isLast: Bool

    public init(vendorID: UInt16, deviceID: UInt16, classCode: UInt32 = 0x030000, code: Code, blocks: Int = 4, isLast: Bool = true) {
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.classCode = classCode
        self.code = code
        self.blocks = blocks
        self.isLast = isLast
    }

    /// The image's bytes: 0x55AA header, PCIR structure at 0x1c, legacy checksum fixed up.
    public var bytes: [UInt8] {
        var image = [UInt8](repeating: 0, count: blocks * 512)
        func put16(_ value: UInt16, _ at: Int) { image[at] = UInt8(value & 0xff); image[at + 1] = UInt8(value >> 8) }
        image[0] = 0x55
        image[1] = 0xaa
        let pcir = 0x1c
        put16(UInt16(pcir), 0x18)
        switch code {
        case .legacyX86:
            image[2] = UInt8(blocks)
            image[3] = 0xcb  // a far return as the entry point
        case .efi(let machine, let subsystem):
            put16(UInt16(blocks), 2)
            put16(0x0ef1, 4)
            put16(subsystem, 8)
            put16(machine, 0x0a)
            put16(0, 0x0c)
        }
        Array("PCIR".utf8).enumerated().forEach { image[pcir + $0.offset] = $0.element }
        put16(vendorID, pcir + 4)
        put16(deviceID, pcir + 6)
        put16(0x18, pcir + 0x0a)
        image[pcir + 0x0c] = 0
        image[pcir + 0x0d] = UInt8(classCode & 0xff)
        image[pcir + 0x0e] = UInt8((classCode >> 8) & 0xff)
        image[pcir + 0x0f] = UInt8((classCode >> 16) & 0xff)
        put16(UInt16(blocks), pcir + 0x10)
        if case .efi = code { image[pcir + 0x14] = 3 }
        image[pcir + 0x15] = isLast ? 0x80 : 0
        if case .legacyX86 = code {
            let sum = image.reduce(UInt8(0)) { $0 &+ $1 }
            image[image.count - 1] = 0 &- sum
        }
        return image
    }

    /// Images laid end to end, the last one marked last.
    public static func rom(_ images: [FixtureROMImage]) -> [UInt8] {
        images.enumerated().flatMap { index, image in
            var marked = image
            marked.isLast = index == images.count - 1
            return marked.bytes
        }
    }
}
