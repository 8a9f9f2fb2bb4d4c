#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemPackage
import SystemCalls

/// The directory that stands for `/sys`. Every path vfioctl reads is taken under it, so tests
/// and users can point the tool at a copied or generated tree.
public struct SysfsRoot: Sendable, Equatable, CustomStringConvertible {
    /// The variable that names another root.
    public static let environmentVariable = "VFIOCTL_SYSFS_ROOT"
    /// The running system's /sys.
    public static let system = SysfsRoot(path: "/sys")

    /// The root directory, without a trailing slash.
    public let path: String

    /// A root at `path` (trailing slashes dropped).
    public init(path: String) {
        // Keep "/" meaningful but drop trailing slashes so joined paths stay canonical.
        var trimmed = path
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed.removeLast() }
        self.path = trimmed
    }

    /// An explicit option wins over the environment, which wins over `/sys`.
    public static func resolve(option: String?, environment: [String: String]) -> SysfsRoot {
        if let option, !option.isEmpty { return SysfsRoot(path: option) }
        if let fromEnvironment = environment[environmentVariable], !fromEnvironment.isEmpty {
            return SysfsRoot(path: fromEnvironment)
        }
        return .system
    }

    /// True when this is the running kernel's sysfs, so /proc and /dev describe the same host.
    /// Decided by the file itself, not the spelling: `/sys/.`, `//sys`, a link to /sys or a bind
    /// mount of it are the live sysfs too, and must not skip the checks a live host gets.
    public var isSystem: Bool { path == "/sys" || Self.isSameDirectory(path, "/sys") }

    /// True when both paths exist and are the same directory (device and inode, links followed).
    public static func isSameDirectory(_ first: String, _ second: String) -> Bool {
        SafeFile.isSameDirectory(first, second)
    }

    /// `relative` under the root.
    public func appending(_ relative: String) -> String { path + "/" + relative }

    /// The root's path.
    public var description: String { path }
}

/// Small, allocation-light reads of sysfs attributes. Sysfs files are tiny and read whole;
/// every function returns nil for a missing or unreadable file rather than throwing, because a
/// missing attribute is ordinary in sysfs (the kernel hides attributes that do not apply).
package struct SysfsReader {
    package init() {}
    /// Reads a whole small file (up to `limit` bytes).
    /// Regular files only, opened without blocking: a FIFO in a crafted tree is not read.
    package func readBytes(_ path: String, limit: Int = 4096) -> [UInt8]? {
        guard let fd = try? FileDescriptor.open(path, .readOnly, options: [.closeOnExec, .nonBlocking]) else { return nil }
        defer { try? fd.close() }
        guard isRegularFile(fd.rawValue) else { return nil }
        var bytes = [UInt8](repeating: 0, count: limit)
        var filled = 0
        while filled < limit {
            let count: Int
            do {
                count = try bytes.withUnsafeMutableBytes { buffer in
                    // The slice starts after what is already filled; the buffer outlives the call.
                    try fd.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]))
                }
            } catch {
                return filled > 0 ? Array(bytes[..<filled]) : nil
            }
            if count == 0 { break }
            filled += count
        }
        bytes.removeSubrange(filled...)
        return bytes
    }

    /// Reads a text attribute with surrounding whitespace removed.
    package func readString(_ path: String) -> String? {
        guard let bytes = readBytes(path) else { return nil }
        var end = bytes.count
        while end > 0, isSpace(bytes[end - 1]) { end -= 1 }
        var start = 0
        while start < end, isSpace(bytes[start]) { start += 1 }
        return String(decoding: bytes[start..<end], as: UTF8.self)
    }

    /// Reads an attribute printed as hex, with or without 0x ("0x10de").
    package func readHex(_ path: String) -> UInt64? {
        guard let text = readString(path) else { return nil }
        return parseHexAttribute(text)
    }

    /// Reads an attribute printed as a decimal integer, possibly negative ("-1").
    package func readInt(_ path: String) -> Int? {
        guard let text = readString(path) else { return nil }
        return Int(text)
    }

    /// The target of a symbolic link, or nil when `path` is not a link.
    package func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = buffer.withUnsafeMutableBufferPointer { pointer -> Int in
            guard let base = pointer.baseAddress else { return -1 }
            return readlink(path, base, pointer.count - 1)
        }
        guard length >= 0 else { return nil }
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The last path component of a link's target: the driver or group a link names.
    package func readLinkBasename(_ path: String) -> String? {
        guard let target = readLink(path) else { return nil }
        return target.split(separator: "/").last.map(String.init)
    }

    /// Whether the path exists after following links (a dangling link does not).
    package func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    /// Directory entries without "." and "..", or nil when the directory cannot be opened.
    package func listDirectory(_ path: String) -> [String]? {
        guard let directory = opendir(path) else { return nil }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> String in
                let bytes = raw.bindMemory(to: UInt8.self)
                let length = bytes.firstIndex(of: 0) ?? bytes.count
                return String(decoding: UnsafeBufferPointer(rebasing: bytes[..<length]), as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            names.append(name)
        }
        return names
    }
}

@inline(__always)
func isSpace(_ byte: UInt8) -> Bool {
    byte == 0x20 || byte == 0x0a || byte == 0x09 || byte == 0x0d
}

/// Parses "0x1af4", "1af4" or "0x0000000000001000" into a value.
func parseHexAttribute<S: StringProtocol>(_ text: S) -> UInt64? {
    var digits = Substring(text)
    if digits.hasPrefix("0x") || digits.hasPrefix("0X") { digits = digits.dropFirst(2) }
    return parseHex(digits, maxDigits: 16)
}
