import ArgumentParser
import PCIInventory
import Testing
import VFIO
@testable import VfioctlCommands

/// Command-line values are parsed once, by their types: what each accepts and refuses.
@Suite struct ArgumentTests {
    @Test func barIndices() {
        #expect((0...5).allSatisfy { BARIndex(argument: String($0))?.value == $0 })
        for bad in ["6", "-1", "x", "", "0x1"] { #expect(BARIndex(argument: bad) == nil, "\(bad)") }
        #expect(BARIndex(argument: "2")?.region == PCIRegion.bar(2))
    }

    @Test func byteCounts() {
        #expect(ByteCount(argument: "4096")?.value == 4096)
        #expect(ByteCount(argument: "0x1000")?.value == 4096)
        #expect(ByteCount(argument: "4K")?.value == 4096)
        #expect(ByteCount(argument: "2m")?.value == 2 << 20)
        #expect(ByteCount(argument: "1G")?.value == 1 << 30)
        #expect(ByteCount(argument: "0x1f")?.value == 0x1f)            // f is a hex digit, not a suffix
        #expect(ByteCount(argument: "128G")?.value == 128 << 30)
        #expect(ByteCount(argument: String(UInt64(1) << 47))?.value == 1 << 47)   // 128 TiB, the largest
        for bad in ["", "K", "0x", "-1", "1T", "1.5M", String((UInt64(1) << 47) + 1), "0xfffffffffffff000", "18446744073709551615K"] {
            #expect(ByteCount(argument: bad) == nil, "\(bad)")
        }
    }

    @Test func pageMultiplesAndLengths() {
        #expect(PageMultiple(argument: "0")?.value == 0)
        #expect(PageMultiple(argument: "4K")?.value == 4096)
        #expect(PageMultiple(argument: "100") == nil)
        #expect(PageMultiple(argument: "0x1001") == nil)
        #expect(PageLength(argument: "0") == nil)
        #expect(PageLength(argument: "2M")?.value == 2 << 20)
        #expect(HugePageMultiple(argument: "3M") == nil)
        #expect(HugePageMultiple(argument: "0") == nil)
        #expect(HugePageMultiple(argument: "256M")?.value == 256 << 20)
    }

    @Test func numbersAndOffsets() {
        #expect(Number(argument: "0xffffffffffffffff")?.value == .max)
        #expect(Number(argument: "12")?.value == 12)
        #expect(Number(argument: "4K") == nil)                           // registers take no suffix
        #expect(ByteOffset(argument: "0x10")?.value == 16)
        #expect(ByteOffset(argument: "0xffffffffffffffff") == nil)
        #expect(ByteOffset(argument: "zz") == nil)
    }

    @Test func widthsPatternsIndicesCounts() {
        #expect([1, 2, 4, 8].allSatisfy { AccessWidth(argument: String($0))?.rawValue == $0 })
        #expect(AccessWidth(argument: "3") == nil)
        #expect(PatternName(argument: "random")?.pattern(seed: 7) == .random(seed: 7))
        #expect(PatternName(argument: "zigzag") == nil)
        #expect(IRQIndexName(argument: "msix")?.index == PCIIRQ.msix)
        #expect(IRQIndexName(argument: "nmi") == nil)
        #expect(PositiveCount(argument: "0") == nil)
        #expect(PositiveCount(argument: "8")?.value == 8)
        #expect(Repetitions(argument: "1000")?.value == 1000)
        #expect(Repetitions(argument: "1001") == nil)
        #expect(ConfigByteCount(argument: "256")?.value == 256)
        for bad in ["3", "-4", "0", "4100"] { #expect(ConfigByteCount(argument: bad) == nil, "\(bad)") }
    }

    @Test func memorySizesAndAddresses() {
        #expect(MemorySize(argument: "8G")?.bytes == 8 << 30)
        #expect(MemorySize(argument: "512MiB")?.bytes == 512 << 20)
        #expect(MemorySize(argument: "lots") == nil)
        #expect(MemorySize(argument: "0") == nil)
        #expect(MemorySize(argument: "99999999999T") == nil)
        #expect(PCIAddress(argument: "01:00.0")?.description == "0000:01:00.0")
        for bad in ["01:00", "zz:00.0", "0000:01:20.0", "0000:01:00.8"] { #expect(PCIAddress(argument: bad) == nil, "\(bad)") }
    }

    /// The commands take the typed values as ArgumentParser parses them.
    @Test func commandsParseTypedValues() throws {
        let touch = try BAR.Touch.parse(["01:00.0", "--bar", "2", "--skew", "4K", "--offset", "2M", "--length", "2M", "--pattern", "reverse", "--no-madvise"])
        #expect(touch.device.address.description == "0000:01:00.0")
        #expect(touch.mapping.bar.value == 2 && touch.mapping.skew.value == 4096 && touch.mapping.advice == .none)
        #expect(touch.mapping.window.offset?.value == 2 << 20 && touch.mapping.window.length?.value == 2 << 20)
        #expect(touch.pattern == .reverse)
        let bench = try DMA.BenchBAR.parse(["01:00.0", "--bar", "2", "--repeat", "7"])
        #expect(bench.mapping.bar.value == 2 && bench.mapping.skew.value == 0 && bench.repetitions.value == 7)
        #expect(throws: (any Error).self) { try BAR.Plan.parse(["01:00.0", "--offset", "4K"]) }   // a window needs --bar
        #expect(throws: (any Error).self) { try BAR.Write.parse(["01:00.0", "--bar", "0", "--width", "1", "0x100"]) }
        let info = try DeviceCommand.Info.parse(["01:00.0", "--reset"])
        #expect(info.options.reset && info.options.device.address.description == "0000:01:00.0")
    }
}
