#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemPackage

/// A ROM could not be read; nothing was left enabled.
public struct ROMReadError: Error, CustomStringConvertible, Equatable {
    /// What failed, with the device and path.
    public let description: String
    /// An error that says `description`.
    public init(_ description: String) { self.description = description }
}

/// The three operations on a device's sysfs `rom` attribute, apart so the sequence (and its
/// clean-up on every path) can be tested without a kernel.
public protocol ROMAttribute {
    /// Writes "1\n" (enable) or "0\n" (disable).
    func setEnabled(_ enabled: Bool) throws(ROMReadError)
    /// Reads the whole ROM, at most `limit` bytes.
    func readAll(limit: Int) throws(ROMReadError) -> [UInt8]
}

/// Reading a device's expansion ROM through its `rom` attribute.
public enum ROMReader {
    /// The largest expansion ROM a ROM BAR can decode (its address field is 24 bits wide).
    public static let maximumSize = 16 << 20

    /// Enables the ROM, reads it, and disables it again, also when the read fails: the kernel
    /// refuses reads of a disabled ROM, and a ROM left enabled keeps its BAR decoding.
    public static func read(_ attribute: some ROMAttribute, limit: Int = maximumSize) throws(ROMReadError) -> [UInt8] {
        try attribute.setEnabled(true)
        let bytes: [UInt8]
        do throws(ROMReadError) {
            bytes = try attribute.readAll(limit: limit)
        } catch {
            try? attribute.setEnabled(false)
            throw error
        }
        try attribute.setEnabled(false)
        return bytes
    }
}

/// `bus/pci/devices/<address>/rom` on a sysfs tree.
public struct SysfsROMAttribute: ROMAttribute {
    /// The attribute's path.
    public let path: String
    /// The device.
    public let address: PCIAddress

    /// The `rom` attribute of `address` under `root`.
    public init(root: SysfsRoot, address: PCIAddress) {
        self.address = address
        self.path = root.appending("bus/pci/devices/\(address)/rom")
    }

    /// Writes "1\n" or "0\n" to the attribute; throws with the path when it cannot.
    public func setEnabled(_ enabled: Bool) throws(ROMReadError) {
        do {
            let fd = try FileDescriptor.open(path, .writeOnly, options: [.closeOnExec])
            defer { try? fd.close() }
            // The kernel disables only on exactly "0\n" (two bytes at offset 0); any other write,
            // a bare "0" included, enables.
            _ = try fd.writeAll(Array((enabled ? "1\n" : "0\n").utf8))
        } catch {
            throw ROMReadError("cannot \(enabled ? "enable" : "disable") the ROM of \(address) (\(path)): \(error)")
        }
    }

    /// Reads the enabled ROM, at most `limit` bytes; throws with the path when it cannot.
    public func readAll(limit: Int) throws(ROMReadError) -> [UInt8] {
        do {
            let fd = try FileDescriptor.open(path, .readOnly, options: [.closeOnExec])
            defer { try? fd.close() }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while bytes.count < limit {
                let count = try chunk.withUnsafeMutableBytes { buffer in
                    // Safety: reads into `chunk`'s own storage, at most its size.
                    try fd.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(buffer.count, limit - bytes.count)]))
                }
                if count == 0 { break }
                bytes += chunk[0..<count]
            }
            return bytes
        } catch {
            throw ROMReadError("cannot read the ROM of \(address) (\(path)): \(error)")
        }
    }
}
