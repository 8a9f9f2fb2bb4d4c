import ArgumentParser
import Testing
@testable import VfioctlCommands

/// Help reads well at a terminal's width: argument-parser wraps each paragraph itself, so a
/// discussion written with hard line breaks comes out ragged ("writes" alone on a line). Each
/// command's help is rendered at 80 columns and every paragraph line but the last must carry more
/// than three words.
@Suite struct HelpLayoutTests {
    /// The lines of `help` that end a paragraph too early: a line of three words or fewer with
    /// more of the same paragraph after it. Example lines, list items and headings ("Examples:")
    /// are not paragraph text.
    static func raggedLines(_ help: String) -> [String] {
        let lines = help.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        // Only the text above the usage line is prose the command wrote; options are laid out by the parser.
        let prose = lines.prefix { !$0.hasPrefix("USAGE:") }
        func isProse(_ line: String) -> Bool {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !line.hasPrefix(" "), !trimmed.hasSuffix(":") else { return false }
            return !(trimmed.hasPrefix("- ") || trimmed.hasPrefix("* ") || trimmed.hasPrefix("vfioctl "))
        }
        var ragged: [String] = []
        for (index, line) in prose.enumerated() where index + 1 < prose.count {
            let next = prose[prose.index(prose.startIndex, offsetBy: index + 1)]
            guard isProse(line), isProse(next) else { continue }
            if line.split(separator: " ").count <= 3 { ragged.append(line) }
        }
        return ragged
    }

    @Test func theRuleCatchesARaggedParagraph() {
        let ragged = """
            OVERVIEW: Something.

            Turns sriov_drivers_autoprobe off first (so no host driver grabs the new VFs),
            writes
            sriov_numvfs (through 0 when changing a non-zero count).

            Examples:
              vfioctl sriov 0000:03:00.0 --vfs 4

            USAGE: vfioctl sriov
            """
        #expect(Self.raggedLines(ragged) == ["writes"])
        let fine = """
            OVERVIEW: Something.

            Turns sriov_drivers_autoprobe off first (so no host driver grabs the new VFs), writes
            sriov_numvfs.

            Example:
              vfioctl sriov 0000:03:00.0 --vfs 4
            """
        #expect(Self.raggedLines(fine).isEmpty)
    }

    @Test(arguments: CLIConventionsTests.commandPaths)
    func helpWrapsIntoWholeLinesAt80Columns(path: String) throws {
        let type = try CLIConventionsTests.command(path)
        let help = path.isEmpty ? VfioctlCLI.helpMessage(columns: 80) : VfioctlCLI.helpMessage(for: type, columns: 80)
        for line in help.split(separator: "\n") {
            #expect(line.count <= 80 || line.hasPrefix("USAGE:") || line.hasPrefix("  vfioctl "),
                    "`vfioctl \(path) --help` has a line wider than 80 columns: \(line)")
        }
        let ragged = Self.raggedLines(help)
        #expect(ragged.isEmpty, "`vfioctl \(path) --help` at 80 columns breaks a paragraph after a short line: \(ragged); write the discussion's paragraphs unwrapped (end each source line with ` \\`)")
    }
}
