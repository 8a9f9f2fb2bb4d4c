import ArgumentParser
import TextFormat
import VFIO

extension BAR {
    /// `vfioctl bar config`: config space through VFIO's config region.
    struct Config: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "config",
            abstract: "Dump config space read through VFIO's config region (hex bytes, 16 a line).",
            discussion: """
                Example:
                  vfioctl bar config 0000:01:00.0 --count 256
                """
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var device: DeviceArgument
        @Option(name: .long, help: ArgumentHelp("Bytes to read from offset 0: a multiple of 4 from 4 to 4096.", valueName: "n"))
        var count = ConfigByteCount(value: 64)

        func run() throws {
            let target = device.address
            let bytes: [UInt8]
            do throws(VFIOError) {
                let device = try openVFIODevice(target, sysfsRoot: global.resolvedRoot.path)
                bytes = try device.readConfigBytes(count: count.value)
            } catch {
                throw CommandFailure("bar config \(target): \(error.description)")
            }
            if global.json {
                // One hex string (two digits a byte, in order): compact and easy to slice.
                print(try JSONOutput.encode(ConfigDumpJSON(address: target.description, count: bytes.count,
                                                           hex: bytes.map(hex2).joined())))
                return
            }
            for line in stride(from: 0, to: bytes.count, by: 16) {
                print(bytes[line..<min(line + 16, bytes.count)].map(hex2).joined(separator: " "))
            }
        }
    }
}

/// `--count` of `bar config`: whole dwords of the 4 KiB config space.
struct ConfigByteCount: ExpressibleByArgument {
    let value: Int
    init?(argument: String) {
        guard let value = Int(argument), value > 0, value % 4 == 0, value <= 4096 else { return nil }
        self.value = value
    }
    fileprivate init(value: Int) { self.value = value }
    var defaultValueDescription: String { String(value) }
}

/// `bar config --json`.
struct ConfigDumpJSON: Encodable {
    let address: String
    let count: Int
    let hex: String
}
