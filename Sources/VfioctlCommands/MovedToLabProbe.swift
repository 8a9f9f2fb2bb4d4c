import ArgumentParser
import Foundation

/// The checks that need a test device's registers or a probe guest (`vm smoke`, `vm dma-smoke`,
/// `dma edu-test`, `dma p2p`) live in `vfioctl-lab-probe`, a tool built from the source tree and
/// not a product. Their old names stay as hidden commands that run that tool when it is
/// installed beside vfioctl (as in the lab), the way git runs `git-NAME`; vfioctl itself knows
/// nothing of the devices.
enum LabProbe {
    /// The probe beside the running executable, nil when it is not there.
    static var executable: String? {
        guard let me = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
        let path = (me as NSString).deletingLastPathComponent + "/vfioctl-lab-probe"
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }

    /// Replaces this process with `vfioctl-lab-probe SUBCOMMAND ARGUMENTS...`.
    static func run(_ subcommand: String, movedFrom old: String, _ arguments: [String]) throws -> Never {
        guard let probe = executable else {
            throw CommandFailure("`vfioctl \(old)` moved to `vfioctl-lab-probe \(subcommand)`, a check for the lab's test devices built from the source tree (swift build --product vfioctl-lab-probe); it is not installed beside vfioctl")
        }
        let argv = [probe, subcommand] + arguments
        var cArguments = argv.map { strdup($0) }
        cArguments.append(nil)
        execv(probe, cArguments)
        let reason = String(cString: strerror(errno))
        for pointer in cArguments { free(pointer) }
        throw CommandFailure("could not run \(probe): \(reason)")
    }
}

extension VMCommand {
    /// `vfioctl vm smoke`: runs `vfioctl-lab-probe vm-smoke`.
    struct Smoke: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "smoke", abstract: "Moved to vfioctl-lab-probe vm-smoke.", shouldDisplay: false)
        @Argument(parsing: .captureForPassthrough) var arguments: [String] = []
        func run() throws { try LabProbe.run("vm-smoke", movedFrom: "vm smoke", arguments) }
    }

    /// `vfioctl vm dma-smoke`: runs `vfioctl-lab-probe vm-dma-smoke`.
    struct DMASmoke: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "dma-smoke", abstract: "Moved to vfioctl-lab-probe vm-dma-smoke.", shouldDisplay: false)
        @Argument(parsing: .captureForPassthrough) var arguments: [String] = []
        func run() throws { try LabProbe.run("vm-dma-smoke", movedFrom: "vm dma-smoke", arguments) }
    }
}

extension DMA {
    /// `vfioctl dma edu-test`: runs `vfioctl-lab-probe edu-test`.
    struct EduTest: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "edu-test", abstract: "Moved to vfioctl-lab-probe edu-test.", shouldDisplay: false)
        @Argument(parsing: .captureForPassthrough) var arguments: [String] = []
        func run() throws { try LabProbe.run("edu-test", movedFrom: "dma edu-test", arguments) }
    }

    /// `vfioctl dma p2p`: runs `vfioctl-lab-probe p2p`.
    struct PeerToPeer: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "p2p", abstract: "Moved to vfioctl-lab-probe p2p.", shouldDisplay: false)
        @Argument(parsing: .captureForPassthrough) var arguments: [String] = []
        func run() throws { try LabProbe.run("p2p", movedFrom: "dma p2p", arguments) }
    }
}
