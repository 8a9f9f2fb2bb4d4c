import ArgumentParser
import Foundation
import Testing
@testable import VfioctlCommands

/// Conventions every vfioctl command keeps: help with an example that really parses, `--json`
/// on every leaf command, and a README that documents every exit status the CLI can end with.
@Suite struct CLIConventionsTests {
    /// Every command under the root (the root included, as ""), by its path: "bar plan".
    static func commands() -> [(path: String, type: ParsableCommand.Type)] {
        var found: [(String, ParsableCommand.Type)] = [("", VfioctlCLI.self)]
        func walk(_ command: ParsableCommand.Type, _ path: String) {
            // Hidden commands (old names that run vfioctl-lab-probe) are not part of the CLI's surface.
            for sub in command.configuration.subcommands where sub.configuration.shouldDisplay {
                let name = sub.configuration.commandName ?? sub._commandName
                let subPath = path.isEmpty ? name : path + " " + name
                found.append((subPath, sub))
                walk(sub, subPath)
            }
        }
        walk(VfioctlCLI.self, "")
        return found
    }

    static var commandPaths: [String] { commands().map(\.path) }

    static func command(_ path: String) throws -> ParsableCommand.Type {
        try #require(commands().first { $0.path == path }?.type, "no command \(path)")
    }

    static func help(_ path: String) throws -> String {
        let type = try command(path)
        return path.isEmpty ? VfioctlCLI.helpMessage() : VfioctlCLI.helpMessage(for: type)
    }

    /// The lines after an "Example:" or "Examples:" line of the help, trimmed, that start with `vfioctl`.
    static func exampleLines(_ help: String) -> [String] {
        var examples: [String] = []
        var inExamples = false
        for raw in help.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line == "Example:" || line == "Examples:" { inExamples = true; continue }
            guard inExamples else { continue }
            if line.hasPrefix("vfioctl") { examples.append(line) } else { inExamples = false }
        }
        return examples
    }

    @Test func theWalkFindsEveryCommand() {
        let paths = Set(Self.commandPaths)
        for expected in ["", "list", "groups", "show", "bind", "unbind", "restore", "persist", "persist add",
                         "persist remove", "persist list", "doctor", "bar", "bar read", "bar write", "bar plan",
                         "bar touch", "bar config", "bar toggle", "bar info", "device", "device info", "dma", "dma check",
                         "dma bench", "kvm", "kvm info", "irq", "irq test", "vm", "vm config"] {
            #expect(paths.contains(expected), "the walk of VfioctlCLI's subcommands missed `\(expected)`")
        }
        // Checks that need a test device or a probe guest are vfioctl-lab-probe's, not vfioctl's:
        // their old names are hidden commands that only run that tool.
        for moved in ["dma edu-test", "dma p2p", "vm smoke", "vm dma-smoke"] {
            #expect(!paths.contains(moved), "`vfioctl \(moved)` is back in the shipping CLI")
        }
        var hidden: [String] = []
        for command in VMCommand.configuration.subcommands + DMA.configuration.subcommands {
            let configuration = command.configuration
            if !configuration.shouldDisplay { hidden.append(configuration.commandName ?? "?") }
        }
        #expect(hidden.sorted() == ["dma-smoke", "edu-test", "p2p", "smoke"])
    }

    @Test(arguments: CLIConventionsTests.commandPaths)
    func helpShowsAnExampleOfThisCommand(_ path: String) throws {
        let help = try Self.help(path)
        let examples = Self.exampleLines(help)
        let invocation = path.isEmpty ? "vfioctl" : "vfioctl " + path
        #expect(!examples.isEmpty, "`\(invocation) --help` has no Example:/Examples: block with a `vfioctl ...` line:\n\(help)")
        for example in examples {
            #expect(example == invocation || example.hasPrefix(invocation + " "),
                    "an example in `\(invocation) --help` does not run that command: \(example)")
        }
    }

    /// Each example parses as the command it shows (options, arguments and validation), up to a
    /// pipe into another program.
    @Test(arguments: CLIConventionsTests.commandPaths)
    func examplesParse(_ path: String) throws {
        for example in Self.exampleLines(try Self.help(path)) {
            let commandLine = example.split(separator: "|", maxSplits: 1).first.map(String.init) ?? example
            let words = commandLine.split(separator: " ").map(String.init).dropFirst()
            do {
                _ = try VfioctlCLI.parseAsRoot(Array(words))
            } catch {
                Issue.record("example `\(example)` does not parse: \(VfioctlCLI.message(for: error))")
            }
        }
    }

    @Test(arguments: CLIConventionsTests.commandPaths)
    func leafCommandsTakeJSON(_ path: String) throws {
        let type = try Self.command(path)
        guard type.configuration.subcommands.isEmpty else { return }
        let help = try Self.help(path)
        #expect(help.contains("--json"), "`vfioctl \(path) --help` does not mention --json:\n\(help)")
        // And the parser takes it: the command may still miss its arguments, but not know --json.
        do {
            _ = try VfioctlCLI.parseAsRoot(path.split(separator: " ").map(String.init) + ["--json"])
        } catch {
            let message = VfioctlCLI.message(for: error)
            #expect(!message.contains("--json"), "`vfioctl \(path) --json` is not accepted: \(message)")
        }
    }

    // MARK: Exit codes

    static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// Every status vfioctl can end with: ArgumentParser's success, failure (any error that is not
    /// an ExitCode, such as CommandFailure) and usage error, and each `ExitCode(...)` the commands
    /// throw, read from their sources (a literal, or a `static let NAME: Int32 = N` it names).
    static func definedExitCodes() throws -> [Int32: String] {
        var codes: [Int32: String] = [
            ExitCode.success.rawValue: "ExitCode.success",
            ExitCode.failure.rawValue: "ExitCode.failure (any error)",
            ExitCode.validationFailure.rawValue: "ExitCode.validationFailure (usage, ValidationError)",
        ]
        let directory = repositoryRoot.appendingPathComponent("Sources/VfioctlCommands")
        // Commands live in subfolders too (BAR/, Device/).
        let files = (FileManager.default.subpaths(atPath: directory.path) ?? []).filter { $0.hasSuffix(".swift") }.sorted()
        let sources = try files.map { try String(contentsOf: directory.appendingPathComponent($0), encoding: .utf8) }
        let everything = sources.joined(separator: "\n")
        let thrown = try Regex(#"ExitCode\(\s*([A-Za-z0-9_.]+)\s*\)"#)
        for source in sources {
            for match in source.matches(of: thrown) {
                guard let expression = match.output[1].substring.map(String.init) else { continue }
                if let literal = Int32(expression) {
                    codes[literal] = "ExitCode(\(literal))"
                    continue
                }
                let member = expression.split(separator: ".").last.map(String.init) ?? expression
                let declaration = try Regex(#"static\s+let\s+"# + member + #"\s*:\s*Int32\s*=\s*(\d+)"#)
                let value = try #require(everything.firstMatch(of: declaration)?.output[1].substring.flatMap { Int32($0) },
                                         "ExitCode(\(expression)) is thrown but no `static let \(member): Int32 = N` was found")
                codes[value] = "ExitCode(\(expression))"
            }
        }
        return codes
    }

    @Test func exitCodeScanReadsTheBindingCodes() throws {
        let codes = try Self.definedExitCodes()
        #expect(codes[BindingExit.refused] != nil)
        #expect(codes[BindingExit.rolledBack] != nil)
        #expect(codes[ExitCode.validationFailure.rawValue] != nil)
    }

    /// The statuses in the first column of the table under README.md's `## Exit codes`.
    static func documentedExitCodes() throws -> [Int32] {
        let readme = try String(contentsOf: repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let lines = readme.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let start = try #require(lines.firstIndex(of: "## Exit codes"), "README.md has no `## Exit codes` section")
        var codes: [Int32] = []
        for line in lines[(start + 1)...] {
            if line.hasPrefix("## ") { break }
            guard line.hasPrefix("|") else { continue }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false)
            guard cells.count > 1 else { continue }
            let first = cells[1].trimmingCharacters(in: CharacterSet(charactersIn: " `"))
            if let code = Int32(first) { codes.append(code) }
        }
        return codes
    }

    @Test func readmeDocumentsEveryExitCode() throws {
        let defined = try Self.definedExitCodes()
        let documented = try Self.documentedExitCodes()
        #expect(Set(documented).count == documented.count, "README's exit-code table lists a status twice: \(documented)")
        for (code, source) in defined.sorted(by: { $0.key < $1.key }) {
            #expect(documented.contains(code), "exit status \(code) (\(source)) is missing from README.md's `## Exit codes` table")
        }
        for code in documented where defined[code] == nil {
            Issue.record("README.md's `## Exit codes` lists \(code), which the CLI never exits with")
        }
    }
}
