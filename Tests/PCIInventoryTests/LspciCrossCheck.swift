import Foundation
import Testing
@testable import PCIInventory

/// What `lspci -vmm -nn -k -D` says about one device.
struct LspciRecord {
    var address = ""
    var className = "", classID = ""
    var vendorName = "", vendorID = ""
    var deviceName = "", deviceID = ""
    var progIf: String?
    var revision: String?
    var driver: String?
}

enum Lspci {
    static let path = "/usr/bin/lspci"

    static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: path) }

    /// Runs lspci on the running system, or on another tree with `-O sysfs.path=ROOT/bus/pci`.
    static func records(sysfsRoot: String?) throws -> [LspciRecord] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        var arguments = ["-vmm", "-nn", "-k", "-D"]
        if let sysfsRoot { arguments += ["-O", "sysfs.path=\(sysfsRoot)/bus/pci"] }
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CommandError(message: "lspci \(arguments.joined(separator: " ")) exited \(process.terminationStatus)")
        }
        return parse(String(decoding: data, as: UTF8.self))
    }

    struct CommandError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    /// Splits "Name [1234]" into ("Name", "1234").
    static func splitName(_ text: String) -> (String, String) {
        guard text.hasSuffix("]"), let open = text.lastIndex(of: "[") else { return (text, "") }
        let id = String(text[text.index(after: open)..<text.index(before: text.endIndex)])
        let name = String(text[..<open]).trimmingCharacters(in: .whitespaces)
        return (name, id)
    }

    static func parse(_ text: String) -> [LspciRecord] {
        var records: [LspciRecord] = []
        for block in text.components(separatedBy: "\n\n") where !block.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            var record = LspciRecord()
            for line in block.split(separator: "\n") {
                let parts = line.split(separator: "\t", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { continue }
                let key = parts[0].trimmingCharacters(in: CharacterSet(charactersIn: ":"))
                let value = parts[1]
                switch key {
                case "Slot": record.address = value
                case "Class": (record.className, record.classID) = splitName(value)
                case "Vendor": (record.vendorName, record.vendorID) = splitName(value)
                case "Device": (record.deviceName, record.deviceID) = splitName(value)
                case "ProgIf": record.progIf = value
                case "Rev": record.revision = value
                case "Driver": record.driver = value
                default: break
                }
            }
            records.append(record)
        }
        return records
    }

    /// Every disagreement between vfioctl's inventory and lspci, as readable lines.
    static func disagreements(_ inventory: PCIInventory, _ records: [LspciRecord]) -> [String] {
        var problems: [String] = []
        let ours = Dictionary(uniqueKeysWithValues: inventory.devices.map { ($0.address.description, $0) })
        let theirs = Set(records.map(\.address))
        for missing in theirs.subtracting(ours.keys).sorted() { problems.append("\(missing): listed by lspci only") }
        for extra in Set(ours.keys).subtracting(theirs).sorted() { problems.append("\(extra): listed by vfioctl only") }
        for record in records {
            guard let device = ours[record.address] else { continue }
            func check(_ what: String, _ mine: String?, _ lspci: String?) {
                if mine != lspci { problems.append("\(record.address) \(what): vfioctl \(mine ?? "nil"), lspci \(lspci ?? "nil")") }
            }
            check("vendor id", device.vendorID.map { String(format: "%04x", $0) }, record.vendorID)
            check("device id", device.deviceID.map { String(format: "%04x", $0) }, record.deviceID)
            check("class", device.classCode.map { String(format: "%04x", $0 >> 8) }, record.classID)
            if let progIf = record.progIf {
                check("prog-if", device.classCode.map { String(format: "%02x", $0 & 0xff) }, progIf)
            }
            check("driver", device.driver, record.driver)
            // lspci substitutes "Device"/"Vendor ..." when pci.ids has no name; vfioctl says nil.
            check("vendor name", device.names.vendor, isFallback(record.vendorName) ? nil : record.vendorName)
            check("device name", device.names.device, isFallback(record.deviceName) ? nil : record.deviceName)
            check("class name", device.names.className, record.className.hasPrefix("Class ") ? nil : record.className)
        }
        return problems
    }

    static func isFallback(_ name: String) -> Bool {
        name == "Device" || name.hasPrefix("Vendor ") || name.isEmpty
    }
}

@Suite struct LspciCrossCheckTests {
    /// The running machine's real /sys: every device agrees with lspci.
    @Test func realSysfsAgreesWithLspci() throws {
        try #require(Lspci.isInstalled, "lspci is not installed (apt-get install pciutils)")
        let inventory = try PCIInventory.scan(root: .system, detail: .summary, names: PCINameDatabase())
        let records = try Lspci.records(sysfsRoot: nil)
        #expect(!records.isEmpty)
        #expect(inventory.devices.count == records.count)
        let problems = Lspci.disagreements(inventory, records)
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }
}
