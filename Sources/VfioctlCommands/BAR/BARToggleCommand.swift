import Foundation
import ArgumentParser
import TextFormat
import VFIO

extension BAR {
    /// `vfioctl bar toggle`: map, unmap and remap a BAR, and switch memory decoding off and on,
    /// showing that a mapping refuses access while decoding is off instead of taking SIGBUS.
    struct Toggle: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "toggle",
            abstract: "Exercise a BAR mapping: read, memory decoding off (access refused), on, unmap, remap, read.",
            discussion: """
                Example:
                  vfioctl bar toggle 0000:01:00.0 --bar 0 --offset 0x10
                """
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var device: DeviceArgument
        @Option(name: .long, help: ArgumentHelp("The BAR, 0-5.", valueName: "n"))
        var bar: BARIndex
        @Option(name: .long, help: ArgumentHelp("Offset of the dword read each step, decimal or 0x-prefixed hex (below 128 TiB).", valueName: "offset"))
        var offset: ByteOffset = ByteOffset(0)

        func run() throws {
            let target = device.address
            // Below 128 TiB, so it fits an Int.
            let readOffset = Int(offset.value)
            var steps: [ToggleStepJSON] = []
            func step(_ name: String, _ value: UInt32?, refused: String? = nil) {
                steps.append(ToggleStepJSON(step: name, value: value.map { $0.hex(digits: 8) }, refused: refused))
            }
            do throws(VFIOError) {
                let device = try openVFIODevice(target, sysfsRoot: global.resolvedRoot.path)
                let region = try device.regionInfo(bar.region)
                let first = try device.mapPlaced(region)
                step("mapped", try first.load32(at: readOffset))
                try device.setMemoryDecoding(false)
                do throws(VFIOError) {
                    step("decoding-off", try first.load32(at: readOffset))
                } catch {
                    step("decoding-off", nil, refused: error.description)
                }
                try device.setMemoryDecoding(true)
                step("decoding-on", try first.load32(at: readOffset))
                try first.unmap()
                let second = try device.mapPlaced(region)
                step("remapped", try second.load32(at: readOffset))
                try second.unmap()
            } catch {
                throw CommandFailure("bar toggle \(target) BAR \(bar): \(error.description)")
            }
            if global.json {
                print(try JSONOutput.encode(ToggleJSON(address: target.description, bar: bar.value, offset: readOffset, steps: steps)))
                return
            }
            for entry in steps {
                let label = entry.step.replacingOccurrences(of: "-", with: " ")
                if let refused = entry.refused {
                    print("\(label): refused: \(refused)")
                } else if entry.step == "decoding-off" {
                    print("\(label): read \(entry.value ?? "?") (not refused)")
                } else {
                    print("\(label): \(entry.value ?? "?")")
                }
            }
        }
    }
}

/// `bar toggle --json`: each step's dword (hex), or why the access was refused (null otherwise).
struct ToggleStepJSON: Encodable {
    let step: String
    let value: String?
    let refused: String?
}

struct ToggleJSON: Encodable {
    let address: String
    let bar: Int
    let offset: Int
    let steps: [ToggleStepJSON]
}
