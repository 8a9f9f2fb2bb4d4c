import PCIInventory
import TextFormat

/// What a device is, as the journal records it: the IDs that tell whether an address still holds
/// the device vfioctl took from its driver (a hot-swap or a re-enumeration can put another there).
public struct DeviceIdentity: Sendable, Equatable, Codable, CustomStringConvertible {
    /// The vendor ID.
    public var vendorID: UInt16
    /// The device ID.
    public var deviceID: UInt16
    /// The subsystem vendor ID, when sysfs gave it.
    public var subsystemVendorID: UInt16?
    /// The subsystem device ID, when sysfs gave it.
    public var subsystemDeviceID: UInt16?

    /// An identity from its IDs.
    public init(vendorID: UInt16, deviceID: UInt16, subsystemVendorID: UInt16?, subsystemDeviceID: UInt16?) {
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.subsystemVendorID = subsystemVendorID
        self.subsystemDeviceID = subsystemDeviceID
    }

    /// nil when sysfs did not give the vendor and device IDs.
    public init?(_ device: PCIDevice) {
        guard let vendor = device.vendorID, let id = device.deviceID else { return nil }
        self.init(vendorID: vendor, deviceID: id, subsystemVendorID: device.subsystemVendorID,
                  subsystemDeviceID: device.subsystemDeviceID)
    }

    /// "vvvv:dddd", with the subsystem IDs when known.
    public var description: String {
        "[\(hex4(vendorID)):\(hex4(deviceID))] subsystem [\(subsystemVendorID.map(hex4) ?? "?"):\(subsystemDeviceID.map(hex4) ?? "?")]"
    }

    enum CodingKeys: String, CodingKey {
        case vendorID = "vendor", deviceID = "device"
        case subsystemVendorID = "subsystem_vendor", subsystemDeviceID = "subsystem_device"
    }

    // Hex strings, as everywhere in vfioctl's JSON.
    /// Decodes the journal's hex strings; throws on anything else.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        func id(_ key: CodingKeys) throws -> UInt16? {
            guard let text = try container.decodeIfPresent(String.self, forKey: key) else { return nil }
            guard text.utf8.count == 4, let value = UInt16(text, radix: 16) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: container, debugDescription: "\"\(text)\" is not 4 hex digits")
            }
            return value
        }
        guard let vendor = try id(.vendorID), let device = try id(.deviceID) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "the identity lacks vendor or device"))
        }
        self.init(vendorID: vendor, deviceID: device, subsystemVendorID: try id(.subsystemVendorID),
                  subsystemDeviceID: try id(.subsystemDeviceID))
    }

    /// Encodes the IDs as hex strings.
    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(hex4(vendorID), forKey: .vendorID)
        try container.encode(hex4(deviceID), forKey: .deviceID)
        try container.encode(subsystemVendorID.map(hex4), forKey: .subsystemVendorID)
        try container.encode(subsystemDeviceID.map(hex4), forKey: .subsystemDeviceID)
    }
}
