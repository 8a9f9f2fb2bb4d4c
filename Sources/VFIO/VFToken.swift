#if canImport(Glibc)
import Glibc
#endif
import CLinuxUAPI
import SystemPackage

/// The VF token of an SR-IOV physical function bound to vfio-pci: a UUID the PF's user sets and
/// every user of one of its VFs must present (`"BDF vf_token=UUID"` as the device name), so a VF
/// cannot be handed to a VM the PF's owner does not know of. Parsed once; printed lower-case.
public struct VFToken: Sendable, Hashable, CustomStringConvertible {
    /// The token's 16 bytes, in the order the UUID text writes them (what the kernel compares).
    public let bytes: [UInt8]

    /// "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (hex, either case); nil otherwise.
    public init?(_ text: String) {
        let groups = text.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.map(\.count) == [8, 4, 4, 4, 12] else { return nil }
        let hex = Array(groups.joined().utf8)
        var bytes: [UInt8] = []
        var index = 0
        while index < hex.count {
            guard let high = Self.nibble(hex[index]), let low = Self.nibble(hex[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        self.bytes = bytes
    }

    /// A random (version 4) token.
    public static func random() -> VFToken {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes[6] = bytes[6] & 0x0f | 0x40
        bytes[8] = bytes[8] & 0x3f | 0x80
        return VFToken(bytes: bytes)
    }

    init(bytes: [UInt8]) { self.bytes = bytes }

    static func nibble(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The UUID text, lower-case: what a VMM appends as `vf_token=` to a VF's device name.
    public var description: String {
        let digits = Array("0123456789abcdef")
        var text = ""
        for (index, byte) in bytes.enumerated() {
            if [4, 6, 8, 10].contains(index) { text.append("-") }
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return text
    }
}

extension VFIODevice {
    /// Sets the VF token of this physical function (VFIO_DEVICE_FEATURE with
    /// VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN): from then on a VF of it opens
    /// only with this token. The kernel refuses (ENOTTY) a device that is not an SR-IOV physical
    /// function on vfio-pci.
    public func setVFToken(_ token: VFToken) throws(VFIOError) {
        var feature = vfio_device_feature()
        feature.flags = CVFIO_DEVICE_FEATURE_SET | CVFIO_DEVICE_FEATURE_PCI_VF_TOKEN
        var buffer = try flexibleArray(header: feature, elements: token.bytes, arrayOffset: Int(CVFIO_DEVICE_FEATURE_DATA_OFFSET), argsz: \.argsz)
        // Safety: the buffer is the feature header with the 16 token bytes, argsz long.
        try ioctlBytes(fd, CVFIO_DEVICE_FEATURE, &buffer.bytes, "VFIO_DEVICE_FEATURE(PCI_VF_TOKEN) on \(address)")
    }
}
