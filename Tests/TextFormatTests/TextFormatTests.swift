import Foundation
import Testing
import TextFormat

@Suite struct TextFormatTests {
    @Test func hexPrefixesAndPads() {
        #expect(UInt64(0).hex() == "0x0")
        #expect(UInt64(0).hex(digits: 8) == "0x00000000")
        #expect(UInt64(0x1f).hex() == "0x1f")
        #expect(UInt32(0x10000ed).hex(digits: 8) == "0x010000ed")
        #expect(UInt64(0x123456789).hex(digits: 4) == "0x123456789")   // never truncates
        #expect(UInt64.max.hex() == "0xffffffffffffffff")
        #expect(UInt64.max.hex(digits: 20) == "0x0000ffffffffffffffff")
        #expect(UInt8.max.hexDigits() == "ff")
        #expect(Int(255).hex() == "0xff")
    }

    @Test func fixedWidthIDs() {
        #expect(hex2(0) == "00")
        #expect(hex2(0xa) == "0a")
        #expect(hex2(0xff) == "ff")
        #expect(hex4(0) == "0000")
        #expect(hex4(0x8086) == "8086")
        #expect(hex4(0x1) == "0001")
        #expect(hex6(0x030000) == "030000")
        #expect(hex6(0x10802) == "010802")
        #expect(hex6(0xffffff) == "ffffff")
        #expect(hex6(0x1000000) == "1000000")
    }

    @Test func byteCountsUseTheLargestUnitThatDivides() {
        #expect(byteCount(0) == "0 B")
        #expect(byteCount(1) == "1 B")
        #expect(byteCount(1023) == "1023 B")
        #expect(byteCount(1024) == "1 KiB")
        #expect(byteCount(4097) == "4097 B")
        #expect(byteCount(4097, bytesUnit: "bytes") == "4097 bytes")
        #expect(byteCount(1020 << 10) == "1020 KiB")
        #expect(byteCount(1 << 20) == "1 MiB")
        #expect(byteCount(3 << 20) == "3 MiB")
        #expect(byteCount((1 << 20) + 1024) == "1025 KiB")
        #expect(byteCount(2 << 30) == "2 GiB")
        #expect(byteCount(1 << 40) == "1 TiB")
        #expect(byteCount(1 << 50) == "1024 TiB")
        #expect(byteCount(UInt64.max) == "18446744073709551615 B")
        #expect(byteCount(UInt64.max - 1023) == "18014398509481983 KiB")
    }

    @Test func everyPowerOfTwoHasItsUnit() {
        for shift in 0..<64 {
            let value: UInt64 = 1 << UInt64(shift)
            let expected: String
            switch shift {
            case 40...: expected = "\(value >> 40) TiB"
            case 30..<40: expected = "\(value >> 30) GiB"
            case 20..<30: expected = "\(value >> 20) MiB"
            case 10..<20: expected = "\(value >> 10) KiB"
            default: expected = "\(value) B"
            }
            #expect(byteCount(value) == expected, "2^\(shift)")
            #expect(byteCountSuffixed(value) == expected.replacingOccurrences(of: " ", with: "").replacingOccurrences(of: "iB", with: ""), "2^\(shift)")
        }
    }

    @Test func suffixedSizes() {
        #expect(byteCountSuffixed(0) == "0B")
        #expect(byteCountSuffixed(4097) == "4097B")
        #expect(byteCountSuffixed(512 << 20) == "512M")
        #expect(byteCountSuffixed(8 << 30) == "8G")
        #expect(byteCountSuffixed(UInt64.max) == "18446744073709551615B")
    }
}
