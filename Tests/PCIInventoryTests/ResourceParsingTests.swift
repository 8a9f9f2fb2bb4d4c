import Testing
@testable import PCIInventory

@Suite struct ResourceParsingTests {
    /// An NVIDIA GPU's resource file as the kernel prints it: BAR0 32-bit, BAR1 64-bit
    /// prefetchable (with BAR2 as its upper half, printed as zeros), BAR3 64-bit, BAR5 I/O, ROM.
    let gpu = """
        0x00000000fb000000 0x00000000fbffffff 0x0000000000040200
        0x0000006000000000 0x00000067ffffffff 0x000000000014220c
        0x0000000000000000 0x0000000000000000 0x0000000000000000
        0x0000006800000000 0x0000006801ffffff 0x000000000014220c
        0x0000000000000000 0x0000000000000000 0x0000000000000000
        0x000000000000e000 0x000000000000e07f 0x0000000000040101
        0x00000000fc000000 0x00000000fc07ffff 0x0000000000046200
        0x0000000000000000 0x0000000000000000 0x0000000000000000
        0x0000000000000000 0x0000000000000000 0x0000000000000000
        0x0000000000000000 0x0000000000000000 0x0000000000000000
        0x0000000000000000 0x0000000000000000 0x0000000000000000
        0x0000000000000000 0x0000000000000000 0x0000000000000000
        0x0000000000000000 0x0000000000000000 0x0000000000000000

        """

    @Test func decodesBARsAndLeavesUnusedOut() {
        let parsed = parseResourceFile(gpu)
        #expect(parsed.problems.isEmpty)
        #expect(parsed.bars.map(\.index) == [0, 1, 3, 5])
        let bar0 = parsed.bars[0]
        #expect(bar0.start == 0xfb00_0000 && bar0.size == 16 << 20 && bar0.kind == .memory)
        #expect(!bar0.is64Bit && !bar0.prefetchable)
        let bar1 = parsed.bars[1]
        #expect(bar1.start == 0x60_0000_0000 && bar1.size == 32 << 30)
        #expect(bar1.is64Bit && bar1.prefetchable && bar1.kind == .memory)
        let io = parsed.bars[3]
        #expect(io.kind == .io && io.start == 0xe000 && io.size == 0x80 && !io.is64Bit)
        #expect(parsed.rom?.start == 0xfc00_0000 && parsed.rom?.size == 512 << 10)
    }

    @Test func laterLinesAreNotBARs() {
        // SR-IOV VF BARs (lines 7-12) must not show up as BARs of the PF.
        var lines = Array(repeating: "0x0000000000000000 0x0000000000000000 0x0000000000000000", count: 13)
        lines[8] = "0x0000000090000000 0x000000009000ffff 0x0000000000140204"
        let parsed = parseResourceFile(lines.joined(separator: "\n") + "\n")
        #expect(parsed.bars.isEmpty && parsed.rom == nil && parsed.problems.isEmpty)
    }

    @Test func garbageIsReportedNotFatal() {
        let parsed = parseResourceFile("hello\n0x1000 0x1fff\n0x00000000fe000000 0x00000000fe000fff 0x0000000000040200\nzz yy xx\n")
        #expect(parsed.problems.count == 3)
        #expect(parsed.problems[0].contains("line 1"))
        #expect(parsed.problems[1].contains("line 2"))
        #expect(parsed.bars.map(\.index) == [2])
        #expect(parsed.bars.first?.size == 4096)
    }

    @Test func reversedRangeIsAProblem() {
        let parsed = parseResourceFile("0x0000000000002000 0x0000000000001000 0x0000000000000200\n")
        #expect(parsed.bars.isEmpty)
        #expect(parsed.problems.count == 1)
    }

    @Test func unassignedBARIsFlagged() {
        let parsed = parseResourceFile("0x0000000000000000 0x0000000000ffffff 0x0000000020040200\n")
        #expect(parsed.bars.first?.unassigned == true)
        #expect(parsed.bars.first?.size == 16 << 20)
    }

    @Test func emptyFileHasNoBARs() {
        let parsed = parseResourceFile("")
        #expect(parsed.bars.isEmpty && parsed.problems.isEmpty)
    }
}

/// A straightforward String-based parser: the oracle the byte-level parser is checked against.
func parseResourceFileSlow(_ text: String) -> ParsedResources {
    var result = ParsedResources()
    var lineIndex = 0
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        defer { lineIndex += 1 }
        guard lineIndex <= PCIBAR.romIndex else { break }
        if line.allSatisfy({ $0 == " " }) {
            // A blank last line is the file's trailing newline; one in the middle is damage.
            continue
        }
        let columns = line.split(separator: " ", omittingEmptySubsequences: true)
        guard columns.count == 3,
              let start = parseHexAttribute(columns[0]),
              let end = parseHexAttribute(columns[1]),
              let flags = parseHexAttribute(columns[2]) else {
            result.problems.append("resource line \(lineIndex + 1) is not \"start end flags\" in hex: \"\(line.prefix(80))\"")
            continue
        }
        appendResource(start: start, end: end, flags: flags, lineIndex: lineIndex, to: &result)
    }
    return result
}

@Suite struct ResourceParserDifferentialTests {
    /// Random resource files, well-formed and damaged, parse the same both ways.
    @Test func byteParserAgreesWithTheStringParser() {
        var generator = SystemRandomNumberGenerator()
        let fragments = ["0x0000000000001000", "0x0000000000001fff", "0x0000000000040200", "0x0000000000140204",
                         "0x0000000000000000", "0x00000000fe000000", "0x00000000fe0fffff", "0x0000000000000101",
                         "zz", "0x", "hello", "0x00000000dfzz0000", "", "1000", "0x10000000000000000"]
        for _ in 0..<3000 {
            var lines: [String] = []
            for _ in 0..<Int.random(in: 0...14, using: &generator) {
                let columns = Int.random(in: 0...4, using: &generator)
                lines.append((0..<columns).map { _ in fragments.randomElement(using: &generator) ?? "" }
                    .joined(separator: String(repeating: " ", count: Int.random(in: 1...2, using: &generator))))
            }
            let text = lines.joined(separator: "\n") + (Bool.random(using: &generator) ? "\n" : "")
            let fast = parseResourceFile(text)
            let slow = parseResourceFileSlow(text)
            if fast != slow { Issue.record("disagree on:\n\(text)\nfast \(fast)\nslow \(slow)"); return }
        }
    }
}
