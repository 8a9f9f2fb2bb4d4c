// How vfioctl writes numbers for people: hex and byte counts, one set of helpers for every
// target (a leaf module with no dependencies, so the lowest layers can use it too).

extension BinaryInteger {
    /// Lower-case hex with a 0x prefix, zero-padded to at least `digits` digits: 0x1f, 0x0000001f.
    public func hex(digits: Int = 0) -> String {
        "0x" + hexDigits(digits)
    }

    /// Lower-case hex without a prefix, zero-padded to at least `width` digits: 1f, 001f.
    public func hexDigits(_ width: Int = 0) -> String {
        // Values that fit 64 bits (all vfioctl prints) are written into a small buffer: no
        // generic radix conversion, and a result of up to 15 bytes needs no allocation.
        if let value = UInt64(exactly: self), width <= 32 {
            return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { buffer -> String in
                var end = 32
                var rest = value
                repeat {
                    end -= 1
                    let digit = UInt8(truncatingIfNeeded: rest & 0xf)
                    buffer[end] = digit < 10 ? 0x30 + digit : 0x57 + digit
                    rest >>= 4
                } while rest != 0
                while 32 - end < width {
                    end -= 1
                    buffer[end] = 0x30
                }
                return String(decoding: UnsafeBufferPointer(rebasing: buffer[end..<32]), as: UTF8.self)
            }
        }
        let digits = String(self, radix: 16)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}

/// Fixed-width hex without a prefix, as sysfs and lspci write IDs: 8086, 030000, 0a.
public func hex2(_ value: UInt8) -> String { value.hexDigits(2) }
/// Four hex digits, as sysfs writes vendor and device IDs: 8086.
public func hex4(_ value: UInt16) -> String { value.hexDigits(4) }
/// Six hex digits, as sysfs writes class codes: 030000.
public func hex6(_ value: UInt32) -> String { value.hexDigits(6) }

/// Bytes in the largest binary unit that divides them: "2 GiB", "1020 KiB", "4097 B" (the last
/// unit's name is `bytesUnit`, for text that says "4097 bytes").
public func byteCount(_ bytes: UInt64, bytesUnit: String = "B") -> String {
    for (shift, name) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        let unit: UInt64 = 1 << UInt64(shift)
        if bytes >= unit, bytes % unit == 0 { return "\(bytes >> UInt64(shift)) \(name)" }
    }
    return "\(bytes) \(bytesUnit)"
}

/// The same choice of unit written the way QEMU and Cloud Hypervisor take sizes: 2G, 512M, 4097B.
public func byteCountSuffixed(_ bytes: UInt64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        let unit: UInt64 = 1 << UInt64(shift)
        if bytes >= unit, bytes % unit == 0 { return "\(bytes >> UInt64(shift))\(suffix)" }
    }
    return "\(bytes)B"
}
