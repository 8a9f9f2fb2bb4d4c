import Foundation
import SysfsFixtures
import Testing
import VfioctlCommands

@Suite struct VersionTests {
    @Test func versionIsTheLibraryConstant() throws {
        let result = try VfioctlBinary.run(["--version"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == VfioctlVersion.current + "\n")
        #expect(VfioctlVersion.current.range(of: #"^[0-9]+\.[0-9]+\.[0-9]+$"#, options: .regularExpression) != nil)
    }

    @Test func versionAsJSON() throws {
        for arguments in [["--version", "--json"], ["--json", "--version"]] {
            let result = try VfioctlBinary.run(arguments)
            #expect(result.status == 0, "\(result.stderr)")
            let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: String]
            #expect(object == ["version": VfioctlVersion.current])
        }
    }

    /// CHANGELOG.md's newest released section (`## X.Y.Z`), if any, is this version: the Debian
    /// package's changelog is made from it, so the two must agree.
    @Test func changelogAgrees() throws {
        let changelog = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../CHANGELOG.md").standardizedFileURL
        let text = try String(contentsOf: changelog, encoding: .utf8)
        let released = text.split(separator: "\n").first { $0.hasPrefix("## ") && $0 != "## Unreleased" }
        if let released {
            #expect(released.dropFirst(3).split(separator: " ").first.map(String.init) == VfioctlVersion.current)
        }
    }
}
