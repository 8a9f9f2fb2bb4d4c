#if canImport(Glibc)
import Glibc
#endif
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

/// What is wrong with a value, in words that follow the value ("is not a PCI address").
public struct ValidationProblem: Error, Equatable, CustomStringConvertible {
    /// The problem, in words that follow the value.
    public let description: String
    /// A problem that says `description`.
    public init(_ description: String) { self.description = description }
}

/// Checks for values that come from the journal or sysfs before they reach a path or a decision.
/// Pure: a value either passes unchanged or the problem is named.
public enum BindingValidation {
    /// Longer than any kernel driver name; anything longer is not one.
    public static let maximumDriverNameLength = 64

    /// The address in the kernel's canonical form ("0000:03:00.0"), the only form sysfs uses
    /// for device names; anything else (padding, upper case, short forms) is refused.
    public static func canonicalAddress(_ text: String) -> Result<PCIAddress, ValidationProblem> {
        guard let address = try? PCIAddress(parsing: text) else { return .failure(.init("is not a PCI address")) }
        guard address.description == text else { return .failure(.init("is not in the canonical form \(address)")) }
        return .success(address)
    }

    /// nil when `name` can be a driver name: one path component of printable ASCII, no '/',
    /// not "." or "..", no more than `maximumDriverNameLength` bytes.
    public static func driverNameProblem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        if bytes.isEmpty { return "is empty" }
        if bytes.count > maximumDriverNameLength { return "is longer than \(maximumDriverNameLength) bytes" }
        if name == "." || name == ".." { return "is not a name" }
        if bytes.contains(UInt8(ascii: "/")) { return "contains '/'" }
        if bytes.contains(where: { $0 <= 0x20 || $0 >= 0x7f }) { return "contains a control, space or non-ASCII byte" }
        return nil
    }

    /// `path` with every link resolved, or nil when it does not exist.
    public static func resolvedPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// True when `path` (already resolved) is `directory` or lies below it.
    public static func isInside(_ path: String, _ directory: String) -> Bool {
        directory == "/" || path == directory || path.hasPrefix(directory + "/")
    }
}
