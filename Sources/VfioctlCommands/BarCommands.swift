import ArgumentParser
import Foundation
import PCIInventory
import VFIO

/// `vfioctl bar`: register access to a device's BARs through VFIO, the way a VMM would do it:
/// container, group, device fd, region info, then an mmap of the region (pread/pwrite where the
/// region cannot be mapped, e.g. an I/O-port BAR).
public struct Bar: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bar",
        abstract: "Read or write a device's BAR registers through VFIO (the device must be bound to vfio-pci).",
        discussion: """
            The device's IOMMU group must be viable: every member bound to vfio-pci (or to no
            driver). Accesses are single, naturally aligned loads and stores of 1, 2, 4 or 8 bytes
            through an mmap of the BAR.

            Examples:
              vfioctl bar read 0000:00:02.0 --bar 0 --offset 0 --width 4
              vfioctl bar write 00:02.0 --bar 0 --offset 0x4 --width 4 0x12345678
            """,
        subcommands: [Read.self, Write.self]
    )
    public init() {}

    /// Options that name one register.
    struct Register: ParsableArguments {
        @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F.", valueName: "address"))
        var address: String

        @Option(name: .long, help: ArgumentHelp("The BAR, 0-5.", valueName: "n"))
        var bar: Int

        @Option(name: .long, help: ArgumentHelp("Byte offset in the BAR, decimal or 0x-prefixed hex.", valueName: "offset"))
        var offset: String = "0"

        @Option(name: .long, help: ArgumentHelp("Access width in bytes: 1, 2, 4 or 8.", valueName: "bytes"))
        var width: Int = 4

        func validate() throws {
            guard (0..<PCIRegion.barCount).contains(bar) else {
                throw ValidationError("--bar must be 0-\(PCIRegion.barCount - 1), not \(bar)")
            }
            guard AccessWidth(rawValue: width) != nil else {
                throw ValidationError("--width must be 1, 2, 4 or 8 (bytes), not \(width)")
            }
            guard parseNumber(offset) != nil else {
                throw ValidationError("--offset \"\(offset)\" is not a decimal or 0x-prefixed hex number")
            }
        }

        /// Values checked by validate().
        func resolved() throws -> (address: PCIAddress, region: UInt32, offset: UInt64, width: AccessWidth) {
            let target: PCIAddress
            do {
                target = try PCIAddress(parsing: address)
            } catch {
                throw CommandFailure(error.description)
            }
            guard let offsetValue = parseNumber(offset), let accessWidth = AccessWidth(rawValue: width) else {
                throw CommandFailure("invalid --offset or --width")
            }
            return (target, PCIRegion.bar(bar), offsetValue, accessWidth)
        }
    }

    struct Read: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "read",
            abstract: "Read one register of a BAR; prints it as 0x-prefixed hex of the access width."
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var register: Register

        func run() throws {
            let (address, regionIndex, offset, width) = try register.resolved()
            let access: BarAccess
            let value: UInt64
            do throws(VFIOError) {
                let device = try openVFIODevice(address, sysfsRoot: global.resolvedRoot.path)
                let region = try device.regionInfo(regionIndex)
                if region.isMappable {
                    let mapping = try device.map(region, writable: false)
                    guard let index = Int(exactly: offset) else {
                        throw VFIOError.outOfRange(offset: offset, width: width.rawValue, size: region.size)
                    }
                    value = try mapping.load(width, at: index)
                    try mapping.unmap()
                    access = .mmap
                } else {
                    note("BAR \(register.bar) of \(address) cannot be mmapped (region flags 0x\(String(region.flags, radix: 16))); reading with pread instead")
                    value = try device.read(region, offset: offset, width: width)
                    access = .pread
                }
            } catch {
                throw CommandFailure("bar read \(address) BAR \(register.bar): \(error.description)")
            }
            try printResult(BarAccessJSON(address: address.description, bar: register.bar, offset: offset,
                                          width: width.rawValue, value: hex(value, width), access: access.rawValue),
                            json: global.json)
        }
    }

    struct Write: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "write",
            abstract: "Write one register of a BAR."
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var register: Register
        @Argument(help: ArgumentHelp("The value, decimal or 0x-prefixed hex; must fit the width.", valueName: "value"))
        var value: String

        func validate() throws {
            guard let number = parseNumber(value) else {
                throw ValidationError("value \"\(value)\" is not a decimal or 0x-prefixed hex number")
            }
            if let accessWidth = AccessWidth(rawValue: register.width), number & ~accessWidth.mask != 0 {
                throw ValidationError("value \(value) does not fit in \(register.width) bytes")
            }
        }

        func run() throws {
            let (address, regionIndex, offset, width) = try register.resolved()
            guard let number = parseNumber(value) else { throw CommandFailure("invalid value \(value)") }
            let access: BarAccess
            do throws(VFIOError) {
                let device = try openVFIODevice(address, sysfsRoot: global.resolvedRoot.path)
                let region = try device.regionInfo(regionIndex)
                if region.isMappable {
                    let mapping = try device.map(region, writable: true)
                    guard let index = Int(exactly: offset) else {
                        throw VFIOError.outOfRange(offset: offset, width: width.rawValue, size: region.size)
                    }
                    try mapping.store(number, width, at: index)
                    try mapping.unmap()
                    access = .mmap
                } else {
                    note("BAR \(register.bar) of \(address) cannot be mmapped (region flags 0x\(String(region.flags, radix: 16))); writing with pwrite instead")
                    try device.write(number, to: region, offset: offset, width: width)
                    access = .pwrite
                }
            } catch {
                throw CommandFailure("bar write \(address) BAR \(register.bar): \(error.description)")
            }
            if global.json {
                try printResult(BarAccessJSON(address: address.description, bar: register.bar, offset: offset,
                                              width: width.rawValue, value: hex(number, width), access: access.rawValue),
                                json: true)
            }
        }
    }
}

private enum BarAccess: String {
    case mmap, pread, pwrite
}

/// `bar read/write --json`: the value as hex text, since JSON numbers lose 64-bit precision.
private struct BarAccessJSON: Encodable {
    let address: String
    let bar: Int
    let offset: UInt64
    let width: Int
    let value: String
    let access: String
}

private func printResult(_ result: BarAccessJSON, json: Bool) throws {
    if json {
        print(try JSONOutput.encode(result))
    } else {
        print(result.value)
    }
}

/// 0x-prefixed, zero-padded to the access width: 0x010000ed for 4 bytes.
private func hex(_ value: UInt64, _ width: AccessWidth) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, width.rawValue * 2 - digits.count)) + digits
}

/// Decimal, or hex with a 0x prefix.
private func parseNumber(_ text: String) -> UInt64? {
    let lower = text.lowercased()
    if lower.hasPrefix("0x") { return UInt64(lower.dropFirst(2), radix: 16) }
    return UInt64(lower, radix: 10)
}

private func note(_ message: String) {
    FileHandle.standardError.write(Data("note: \(message)\n".utf8))
}
