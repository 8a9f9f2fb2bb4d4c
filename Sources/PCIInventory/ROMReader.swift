#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemPackage
import SystemCalls

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

/// `bus/pci/devices/<address>/rom` on a sysfs tree, opened beneath the root (a symlink that
/// leaves it is refused) and only as a regular file (a FIFO or device node planted in its place
/// is refused at once, never read or written).
public struct SysfsROMAttribute: ROMAttribute {
    /// The attribute's path.
    public let path: String
    /// The device.
    public let address: PCIAddress
    /// The tree the attribute is in.
    public let root: SysfsRoot

    /// The `rom` attribute of `address` under `root`.
    public init(root: SysfsRoot, address: PCIAddress) {
        self.address = address
        self.root = root
        self.path = root.appending("bus/pci/devices/\(address)/rom")
    }

    var relativePath: String { "bus/pci/devices/\(address)/rom" }

    /// Writes "1\n" or "0\n" to the attribute: only on the live kernel's sysfs (on a copied
    /// tree the attribute is a plain file holding the ROM, and a write would overwrite it).
    public func setEnabled(_ enabled: Bool) throws(ROMReadError) {
        let verb = enabled ? "enable" : "disable"
        guard root.isSystem else {
            throw ROMReadError("cannot \(verb) the ROM of \(address): \(root.path) is not the live /sys, and vfioctl never writes to a copied sysfs tree")
        }
        let descriptor: Int32
        do { descriptor = try SafeFile.openBeneath(root: root.path, relative: relativePath, flags: O_WRONLY) } catch {
            throw ROMReadError("cannot \(verb) the ROM of \(address): \(error.description)")
        }
        defer { close(descriptor) }
        // The kernel disables only on exactly "0\n" (two bytes at offset 0); any other write,
        // a bare "0" included, enables.
        let text: [UInt8] = Array((enabled ? "1\n" : "0\n").utf8)
        let written = text.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        guard written == text.count else {
            throw ROMReadError("cannot \(verb) the ROM of \(address) (\(path)): \(written < 0 ? String(cString: strerror(errno)) : "short write")")
        }
    }

    /// Reads the enabled ROM, at most `limit` bytes; throws with the path when it cannot, or when
    /// it holds more.
    public func readAll(limit: Int) throws(ROMReadError) -> [UInt8] {
        do { return try SafeFile.readBeneath(root: root.path, relative: relativePath, limit: limit) } catch {
            throw ROMReadError("cannot read the ROM of \(address): \(error.description)")
        }
    }
}

extension ROMReader {
    /// The ROM of `address` under `root`: on the live sysfs enabled, read and disabled again; on
    /// a copied tree (read-only to vfioctl) the `rom` file is read as it is.
    public static func read(root: SysfsRoot, address: PCIAddress, limit: Int = maximumSize) throws(ROMReadError) -> [UInt8] {
        let attribute = SysfsROMAttribute(root: root, address: address)
        return root.isSystem ? try read(attribute, limit: limit) : try attribute.readAll(limit: limit)
    }
}
