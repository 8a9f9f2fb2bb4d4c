import ArgumentParser

/// vfioctl's version, in one place: `vfioctl --version` prints it, and `scripts/build-deb` takes
/// the Debian package's version from that output (and checks that CHANGELOG.md has no released
/// section newer than it), so the binary and its package cannot disagree.
public enum VfioctlVersion {
    /// The release this tree builds, as `MAJOR.MINOR.PATCH`.
    public static let current = "0.1.0"

    /// `vfioctl --version --json`'s output: one object, `{"version": "..."}`.
    static func json() throws -> String {
        try JSONOutput.encode(["version": current])
    }
}

extension VfioctlCLI {
    /// Runs the command line. `--version` alone is ArgumentParser's (plain text); with `--json`
    /// beside it, the version is printed as JSON, which ArgumentParser's built-in flag cannot do.
    public static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.count == 2, arguments.contains("--version"), arguments.contains("--json") {
            do {
                print(try VfioctlVersion.json())
            } catch {
                exit(withError: error)
            }
            return
        }
        main(arguments)
    }
}
