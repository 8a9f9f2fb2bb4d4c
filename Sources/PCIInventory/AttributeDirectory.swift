#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemCalls

/// One sysfs directory opened once, its attributes read relative to it with openat(2) and
/// readlinkat(2). The inventory reads ten-odd attributes of each of possibly thousands of
/// devices; resolving the full path for each, and allocating a buffer per read, is what made a
/// scan slower than lspci. Attribute files are small and the kernel returns them in one read.
struct AttributeDirectory: ~Copyable {
    private let descriptor: Int32

    init?(path: String) {
        let opened = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard opened >= 0 else { return nil }
        descriptor = opened
    }

    deinit { close(descriptor) }

    /// Reads the attribute `name` into `buffer` (whose size bounds the read); returns the byte
    /// count, or nil when the attribute is missing or unreadable.
    func read(_ name: String, into buffer: inout [UInt8]) -> Int? {
        // Non-blocking, and regular files only: a FIFO or device node planted in a tree would
        // otherwise block the open or the read forever.
        let file = openat(descriptor, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard file >= 0 else { return nil }
        defer { close(file) }
        guard isRegularFile(file) else { return nil }
        var filled = 0
        while filled < buffer.count {
            let result = SystemCall.retryingOnInterrupt {
                buffer.withUnsafeMutableBytes { raw -> Int in
                    // Contract: the base address is valid for raw.count bytes; we read past `filled`.
                    guard let base = raw.baseAddress else { return -1 }
                    return Glibc.read(file, base + filled, raw.count - filled)
                }
            }
            guard case let .success(count) = result else { return filled > 0 ? filled : nil }
            if count == 0 { break }
            filled += count
            // Sysfs hands out an attribute whole; a short read means the end. Regular files
            // (copied trees) end there too unless the buffer filled exactly.
            if filled < buffer.count { break }
        }
        return filled
    }

    /// The target of the link `name`, into `buffer`; returns its length, or nil for no link.
    func readLink(_ name: String, into buffer: inout [UInt8]) -> Int? {
        let length = buffer.withUnsafeMutableBytes { raw -> Int in
            guard let base = raw.baseAddress else { return -1 }
            return readlinkat(descriptor, name, base.assumingMemoryBound(to: CChar.self), raw.count)
        }
        return length >= 0 ? length : nil
    }

    /// Whether `name` exists after following links (a dangling link does not).
    func exists(_ name: String) -> Bool {
        faccessat(descriptor, name, F_OK, 0) == 0
    }
}

/// Whether an open descriptor is a regular file (what every sysfs and procfs attribute is).
func isRegularFile(_ descriptor: Int32) -> Bool {
    var status = stat()
    return fstat(descriptor, &status) == 0 && status.st_mode & S_IFMT == S_IFREG
}

/// Parsing straight from the bytes of an attribute, without building a String.
enum AttributeBytes {
    /// A hex value printed as "0x10de\n" (or without 0x).
    static func hex(_ buffer: [UInt8], count: Int) -> UInt64? {
        var start = 0
        var end = count
        while start < end, isSpace(buffer[start]) { start += 1 }
        while end > start, isSpace(buffer[end - 1]) { end -= 1 }
        if end - start > 2, buffer[start] == UInt8(ascii: "0"), buffer[start + 1] | 0x20 == UInt8(ascii: "x") { start += 2 }
        guard end > start, end - start <= 16 else { return nil }
        var value: UInt64 = 0
        for index in start..<end {
            guard let digit = hexDigitValue(buffer[index]) else { return nil }
            value = value << 4 | UInt64(digit)
        }
        return value
    }

    /// The attribute's text without surrounding whitespace.
    static func trimmedText(_ buffer: [UInt8], count: Int) -> String {
        var start = 0
        var end = count
        while start < end, isSpace(buffer[start]) { start += 1 }
        while end > start, isSpace(buffer[end - 1]) { end -= 1 }
        return String(decoding: buffer[start..<end], as: UTF8.self)
    }

    /// A signed decimal printed as "-1\n" or "0\n" (numa_node); nil for anything else.
    static func decimal(_ buffer: [UInt8], count: Int) -> Int? {
        let text = trimmedText(buffer, count: count)
        guard text.count <= 10 else { return nil }
        return Int(text)
    }

    /// The last path component of a link target: the driver or group name.
    static func basename(_ buffer: [UInt8], count: Int) -> String {
        var start = count
        while start > 0, buffer[start - 1] != UInt8(ascii: "/") { start -= 1 }
        return String(decoding: buffer[start..<count], as: UTF8.self)
    }

    /// A decimal integer at the end of a link target ("../../../kernel/iommu_groups/14").
    static func trailingInteger(_ buffer: [UInt8], count: Int) -> Int? {
        var start = count
        while start > 0, buffer[start - 1] != UInt8(ascii: "/") { start -= 1 }
        guard start < count, count - start <= 9 else { return nil }
        var value = 0
        for index in start..<count {
            let byte = buffer[index]
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }
}
