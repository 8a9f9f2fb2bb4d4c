import ArgumentParser
import Foundation
import PCIInventory
import TextFormat
import VFIO
import SystemCalls

/// `vfioctl rom`: a device's expansion ROM, read and judged for use by a VM.
struct ROMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rom",
        abstract: "Read a device's option ROM and say whether it will serve a VM.",
        discussion: """
            The ROM is read through VFIO's ROM region when the device is on vfio-pci, otherwise \
            through sysfs (enabled, read, disabled again).

            Examples:
              vfioctl rom check 0000:01:00.0
              vfioctl rom check --file vbios.rom --device 01:00.0
              vfioctl rom dump 01:00.0 --output vbios.rom
            """,
        subcommands: [Check.self, Dump.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Parse every image of the ROM (signature, PCIR, IDs, code type, checksum) and judge it; exit 2 when it will not serve a VM.",
            discussion: """
                Examples:
                  vfioctl rom check 0000:01:00.0
                  vfioctl rom check --file vbios.rom
                  vfioctl rom check --file vbios.rom --device 01:00.0 --json
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F in hex, function 0-7 (its ROM is read unless --file is given).", valueName: "address"))
        var address: PCIAddress?
        @Option(name: .long, help: ArgumentHelp("Check this ROM file instead of reading a device's ROM.", valueName: "path"))
        var file: String?
        @Option(name: .long, help: ArgumentHelp("With --file: match the images against this device.", valueName: "address"))
        var device: PCIAddress?

        func validate() throws {
            if file == nil, address == nil { throw ValidationError("give a device address, or --file PATH") }
            if file != nil, address != nil { throw ValidationError("give either a device address or --file, not both (--file PATH --device ADDRESS matches a file against a device)") }
            if file == nil, device != nil { throw ValidationError("--device goes with --file") }
        }

        func run() throws {
            let source: ROMSource
            let target: PCIDevice?
            if let file {
                target = try device.map { try ROMSource.lookUp($0, global) }
                source = try ROMSource.file(file)
            } else {
                guard let address else { throw ValidationError("give a device address, or --file PATH") }
                let found = try ROMSource.lookUp(address, global)
                target = found
                source = try ROMSource.read(found, global)
            }
            let rom = OptionROM.parse(source.bytes)
            let verdict = OptionROMVerdict.judge(rom, vendorID: target?.vendorID, deviceID: target?.deviceID,
                                                 isDisplay: target?.isDisplay ?? rom.images.contains { $0.classCode >> 16 == 0x03 })
            if global.json {
                JSONValue.romReport(rom, verdict: verdict, address: target?.address, source: source.name).printToStandardOutput()
            } else {
                for line in ROMText.describe(rom, verdict: verdict, address: target?.address, source: source.name) { print(line) }
            }
            if !verdict.servesVM { throw ExitCode(2) }
        }
    }

    struct Dump: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dump",
            abstract: "Write the device's ROM, byte for byte, to a file (or to stdout when it is not a terminal).",
            discussion: """
                Without --output the bytes go to stdout, which must then be redirected.

                Example:
                  vfioctl rom dump 0000:01:00.0 --output vbios.rom
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address"))
        var address: PCIAddress
        @Option(name: .long, help: ArgumentHelp("Write the ROM here (a new file, or a regular file replaced atomically; - for stdout).", valueName: "path"))
        var output: String?

        func run() throws {
            let found = try ROMSource.lookUp(address, global)
            if output == nil || output == "-", isatty(STDOUT_FILENO) != 0 {
                throw CommandFailure("rom dump: stdout is a terminal; redirect it to a file or pass --output PATH")
            }
            let source = try ROMSource.read(found, global)
            if let output, output != "-" {
                try OutputFile.write(source.bytes, to: output, command: "rom dump")
                warn("\(found.address): \(source.bytes.count) bytes of ROM (\(source.name)) written to \(output)")
            } else {
                FileHandle.standardOutput.write(Data(source.bytes))
            }
        }
    }
}

/// Where a ROM's bytes came from.
struct ROMSource {
    var bytes: [UInt8]
    var name: String

    static func lookUp(_ address: PCIAddress, _ global: GlobalOptions) throws -> PCIDevice {
        try InventoryLoader.device(address, in: InventoryLoader.load(global, detail: .summary))
    }

    static func file(_ path: String, command: String = "rom check") throws -> ROMSource {
        // Non-blocking and regular files only: a FIFO or a directory is refused at once. One
        // byte past the largest ROM tells an oversized file from a full-size one.
        let bytes: [UInt8]
        do { bytes = try SafeFile.read(path, limit: ROMReader.maximumSize) } catch {
            if error.reason.hasPrefix("is larger") {
                throw CommandFailure("\(command): \(path) is larger than 16 MiB, the most a ROM BAR decodes; not an option ROM")
            }
            throw CommandFailure("\(command): cannot read \(error.description); give the path of a ROM image file")
        }
        return ROMSource(bytes: bytes, name: "file \(path)")
    }

    /// The device's ROM, read the one safe way for its state (DeviceROM.read in VFIO).
    static func read(_ device: PCIDevice, _ global: GlobalOptions) throws -> ROMSource {
        do throws(DeviceROMError) {
            let rom = try DeviceROM.read(device, root: global.resolvedRoot)
            return ROMSource(bytes: rom.bytes, name: rom.source.description)
        } catch {
            throw CommandFailure(error.description)
        }
    }
}

enum ROMText {
    static func describe(_ rom: OptionROM, verdict: OptionROMVerdict, address: PCIAddress?, source: String) -> [String] {
        var lines = ["ROM" + (address.map { " of \($0)" } ?? "") + ": \(rom.size) bytes, from \(source), \(rom.images.count) image\(rom.images.count == 1 ? "" : "s")"]
        for (index, image) in rom.images.enumerated() {
            var text = "  image \(index) at \(image.offset.hex()): \(image.codeType.name)"
            if let efi = image.efi { text += " \(efi.machineName) \(efi.subsystemName)" + (efi.compressed ? ", compressed" : "") }
            text += ", \(hex4(image.vendorID)):\(hex4(image.deviceID)), class \(hex6(image.classCode)), \(image.length) bytes"
            if let checksum = image.checksumValid { text += checksum ? ", checksum ok" : ", checksum BAD" }
            if image.isLast { text += ", last" }
            lines.append(text)
            for problem in image.problems { lines.append("    problem: \(problem)") }
        }
        for problem in rom.problems { lines.append("  problem: \(problem)") }
        lines.append("legacy BIOS guest: " + (verdict.legacyImage.map { "yes (image \($0))" } ?? "no"))
        lines.append("UEFI x64 guest:    " + (verdict.efiImage.map { "yes (image \($0))" } ?? "no"))
        for finding in verdict.findings { lines.append("note: \(finding)") }
        lines.append("verdict: " + (verdict.servesVM ? "serves a VM" : "will not serve a VM"))
        return lines
    }
}

extension JSONValue {
    static func romReport(_ rom: OptionROM, verdict: OptionROMVerdict, address: PCIAddress?, source: String) -> JSONValue {
        let images: [JSONValue] = rom.images.map { image in
            .object([
                ("offset", .integer(image.offset)),
                ("vendor_id", .string(hex4(image.vendorID))), ("device_id", .string(hex4(image.deviceID))),
                ("extra_device_ids", .array(image.extraDeviceIDs.map { .string(hex4($0)) })),
                ("class", .string(hex6(image.classCode))),
                ("code_type", .string(image.codeType.key)),
                ("efi_machine", .optional(image.efi?.machineName)),
                ("efi_subsystem", .optional(image.efi?.subsystemName)),
                ("efi_compressed", .optional(image.efi?.compressed)),
                ("last", .bool(image.isLast)), ("length", .integer(image.length)),
                ("checksum_valid", .optional(image.checksumValid)),
                ("problems", .array(image.problems.map(JSONValue.string))),
            ])
        }
        return .object([
            ("address", .optional(address?.description)), ("source", .string(source)), ("size", .integer(rom.size)),
            ("images", .array(images)), ("problems", .array(rom.problems.map(JSONValue.string))),
            ("serves_vm", .bool(verdict.servesVM)), ("legacy_image", .optional(verdict.legacyImage)),
            ("efi_image", .optional(verdict.efiImage)), ("findings", .array(verdict.findings.map(JSONValue.string))),
        ])
    }
}
