import PCIInventory
import TextFormat

/// The ways a host binds a PCI device to a driver at boot, besides binding by hand.
public enum BootBindingMechanism: String, Sendable, Codable, CaseIterable {
    /// `vfio-pci.ids=`, `vfio_pci.ids=` or `pci-stub.ids=` on the kernel command line.
    case kernelCommandLine = "kernel-command-line"
    /// `options vfio-pci ids=` (or pci-stub) in a modprobe.d file.
    case modprobeOptions = "modprobe-options"
    /// A driverctl override (/etc/driverctl.d/pci-ADDRESS), applied by driverctl's udev rule.
    case driverctl
    /// A udev rule, not vfioctl's, that sets driver_override.
    case udevRule = "udev-rule"
    /// vfioctl's own udev rule (`persist add`).
    case vfioctlRule = "vfioctl-rule"
    /// vfioctl's early binding from the initramfs (`persist add --early`).
    case vfioctlEarly = "vfioctl-early"

    /// Whether the mechanism takes every device of a model (vendor:device), not one address.
    public var matchesByModel: Bool { self == .kernelCommandLine || self == .modprobeOptions }
}

/// A file, and a line in it (nil for the whole file), that a finding points at.
public struct SourceLocation: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// The file's path as shown to the user (under the root it was read from).
    public let file: String
    /// The 1-based line, when the finding is about one line.
    public let line: Int?
    /// A location in `file`, at `line` when given.
    public init(file: String, line: Int? = nil) {
        self.file = file
        self.line = line
    }
    /// "FILE:LINE", or "FILE" for a whole file.
    public var description: String { line.map { "\(file):\($0)" } ?? file }
}

/// A PCI vendor:device pair as `ids=` lists it.
public struct PCIModelID: Sendable, Equatable, Hashable, Comparable, CustomStringConvertible {
    /// The vendor ID.
    public let vendor: UInt16
    /// The device ID.
    public let device: UInt16
    /// The pair `vendor`:`device`.
    public init(vendor: UInt16, device: UInt16) {
        self.vendor = vendor
        self.device = device
    }
    /// "10de:2204".
    public var description: String { hex4(vendor) + ":" + hex4(device) }
    /// Ordered by vendor, then device.
    public static func < (a: PCIModelID, b: PCIModelID) -> Bool { (a.vendor, a.device) < (b.vendor, b.device) }
}

/// What a binding statement selects: devices of a model, or one address.
public enum BootBindingTarget: Sendable, Equatable, Hashable {
    /// Every device with this vendor:device.
    case model(PCIModelID)
    /// The device at this address.
    case address(PCIAddress)
}

/// One statement, in one file, that binds devices to a driver at boot.
public struct BootBindingSource: Sendable, Equatable, Hashable {
    /// Which mechanism.
    public let mechanism: BootBindingMechanism
    /// The driver it binds to (vfio-pci, pci-stub, or a driverctl override's driver).
    public let driver: String
    /// The devices it selects.
    public let target: BootBindingTarget
    /// Where it is written.
    public let location: SourceLocation
    /// A source with every field given.
    public init(mechanism: BootBindingMechanism, driver: String, target: BootBindingTarget, location: SourceLocation) {
        self.mechanism = mechanism
        self.driver = driver
        self.target = target
        self.location = location
    }
}

/// `softdep MODULE pre: ...`: modules modprobe loads before MODULE.
public struct ModprobeSoftdep: Sendable, Equatable {
    /// The module the softdep is for (underscores, as modprobe compares them).
    public let module: String
    /// The modules loaded before it (underscores).
    public let pre: [String]
    /// Where it is written.
    public let location: SourceLocation
    /// A softdep for `module` loading `pre` first, written at `location`.
    public init(module: String, pre: [String], location: SourceLocation) {
        self.module = module
        self.pre = pre
        self.location = location
    }
}

/// Something in a file that could not be understood or read: said, with where, never fatal.
public struct BootBindingProblem: Error, Sendable, Equatable, CustomStringConvertible {
    /// Where.
    public let location: SourceLocation
    /// What is wrong and what to do.
    public let message: String
    /// A problem at `location`.
    public init(location: SourceLocation, message: String) {
        self.location = location
        self.message = message
    }
    /// "FILE:LINE: message".
    public var description: String { "\(location): \(message)" }
}

/// What one file (or the command line) says about boot-time binding.
public struct BootBindingDeclarations: Sendable, Equatable {
    /// Binding statements.
    public var sources: [BootBindingSource] = []
    /// Softdeps (modprobe.d).
    public var softdeps: [ModprobeSoftdep] = []
    /// Modules the initramfs is told to load early: `rd.driver.pre=` on the command line,
    /// initramfs-tools' modules file, dracut's force_drivers/add_drivers (underscores).
    public var initramfsModules: [String] = []
    /// What could not be understood.
    public var problems: [BootBindingProblem] = []
    /// Nothing declared yet.
    public init() {}

    /// Adds everything `other` declares.
    public mutating func merge(_ other: BootBindingDeclarations) {
        sources += other.sources
        softdeps += other.softdeps
        initramfsModules += other.initramfsModules
        problems += other.problems
    }
}

/// Pure parsers, one per format: text in, declarations out, with the file and line of each.
public enum BootBindingParser {
    /// Module names as modprobe compares them: `-` and `_` are the same.
    public static func moduleName<S: StringProtocol>(_ name: S) -> String {
        name.replacingOccurrences(of: "-", with: "_")
    }

    /// Drivers whose `ids=` parameter binds devices by model.
    static let idsDrivers: [String: String] = ["vfio_pci": "vfio-pci", "pci_stub": "pci-stub"]

    /// An `ids=` value ("10de:2204,10de:1aef:ffffffff:ffffffff:00030000:ffff0000"): each entry's
    /// vendor:device; the subvendor, subdevice and class fields vfio-pci also takes are
    /// accepted and not used. A malformed entry is a problem naming it.
    public static func ids(_ value: Substring, location: SourceLocation) -> (ids: [PCIModelID], problems: [BootBindingProblem]) {
        var ids: [PCIModelID] = []
        var problems: [BootBindingProblem] = []
        if value.isEmpty {
            return ([], [BootBindingProblem(location: location, message: "empty ids= list: give VENDOR:DEVICE pairs in hex, such as ids=10de:2204,10de:1aef")])
        }
        for entry in value.split(separator: ",", omittingEmptySubsequences: false) {
            let fields = entry.split(separator: ":", omittingEmptySubsequences: false)
            let hexOK = { (field: Substring, digits: Int) in
                !field.isEmpty && field.count <= digits && field.allSatisfy(\.isHexDigit)
            }
            // Vendor and device are written with their 4 digits: a shorter one is more likely a
            // typo than an ID below 0x1000.
            guard fields.count >= 2, fields.count <= 6, fields[0].count == 4, fields[1].count == 4,
                  hexOK(fields[0], 4), hexOK(fields[1], 4), fields.dropFirst(2).allSatisfy({ hexOK($0, 8) }),
                  let vendor = UInt16(fields[0], radix: 16), let device = UInt16(fields[1], radix: 16) else {
                problems.append(BootBindingProblem(location: location, message: "malformed ids= entry '\(entry)': each entry is VENDOR:DEVICE in hex (4 digits each), such as 10de:2204, optionally followed by :SUBVENDOR:SUBDEVICE:CLASS:CLASS_MASK"))
                continue
            }
            ids.append(PCIModelID(vendor: vendor, device: device))
        }
        return (ids, problems)
    }

    /// The kernel command line (/proc/cmdline): `vfio-pci.ids=`, `vfio_pci.ids=`, `pci-stub.ids=`
    /// (and `pci_stub.ids=`), and `rd.driver.pre=`.
    public static func kernelCommandLine(_ text: String, file: String) -> BootBindingDeclarations {
        var result = BootBindingDeclarations()
        let location = SourceLocation(file: file)
        for word in text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }) {
            let word = word.trimmingQuotes
            guard let equals = word.firstIndex(of: "=") else { continue }
            let key = word[..<equals], value = word[word.index(after: equals)...]
            if key == "rd.driver.pre" {
                result.initramfsModules += value.split(separator: ",").map(moduleName)
                continue
            }
            guard key.hasSuffix(".ids"), let driver = idsDrivers[moduleName(key.dropLast(4))] else { continue }
            let (ids, problems) = Self.ids(value, location: location)
            result.problems += problems
            result.sources += ids.map { BootBindingSource(mechanism: .kernelCommandLine, driver: driver, target: .model($0), location: location) }
        }
        return result
    }

    /// Joins modprobe.d's continued lines (a trailing backslash) and drops comments; each
    /// logical line keeps the number of its first physical line.
    static func logicalLines(_ text: String) -> [(number: Int, words: [Substring])] {
        var lines: [(Int, [Substring])] = []
        var pending = "", start = 0
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if pending.isEmpty { start = index + 1 }
            if raw.hasSuffix("\\") {
                pending += raw.dropLast() + " "
                continue
            }
            let line = pending + raw
            pending = ""
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let first = words.first, !first.hasPrefix("#") else { continue }
            lines.append((start, words))
        }
        return lines
    }

    /// A modprobe.d file: `options vfio-pci ids=...` (or pci-stub) and `softdep`.
    public static func modprobeConfiguration(_ text: String, file: String) -> BootBindingDeclarations {
        var result = BootBindingDeclarations()
        for (number, words) in logicalLines(text) {
            let location = SourceLocation(file: file, line: number)
            switch words[0] {
            case "options" where words.count >= 3:
                guard let driver = idsDrivers[moduleName(words[1])] else { continue }
                for option in words.dropFirst(2) where option.hasPrefix("ids=") {
                    let (ids, problems) = Self.ids(option.dropFirst(4).trimmingQuotes, location: location)
                    result.problems += problems
                    result.sources += ids.map { BootBindingSource(mechanism: .modprobeOptions, driver: driver, target: .model($0), location: location) }
                }
            case "softdep" where words.count >= 2:
                var pre: [String] = []
                var inPre = false
                for word in words.dropFirst(2) {
                    if word == "pre:" { inPre = true } else if word == "post:" { inPre = false } else if inPre { pre.append(moduleName(word)) }
                }
                if !pre.isEmpty { result.softdeps.append(ModprobeSoftdep(module: moduleName(words[1]), pre: pre, location: location)) }
            default:
                continue
            }
        }
        return result
    }

    /// One driverctl override: the file /etc/driverctl.d/pci-ADDRESS holds the driver's name.
    /// A name that is not pci-ADDRESS, or a driver name that is not one, is a problem.
    public static func driverctlOverride(fileName: String, contents: String, file: String) -> BootBindingDeclarations {
        var result = BootBindingDeclarations()
        let location = SourceLocation(file: file, line: 1)
        guard fileName.hasPrefix("pci-") else { return result }   // other buses are not PCI's
        guard let address = try? PCIAddress(parsing: String(fileName.dropFirst(4))) else {
            result.problems.append(BootBindingProblem(location: SourceLocation(file: file), message: "driverctl override file whose name is not pci-DOMAIN:BUS:DEVICE.FUNCTION: remove it or rename it (`driverctl list-persisted` shows what driverctl makes of it)"))
            return result
        }
        let driver = contents.split(whereSeparator: \.isNewline).first.map { String(String($0).trimmed) } ?? ""
        if let problem = BindingValidation.driverNameProblem(driver) {
            result.problems.append(BootBindingProblem(location: location, message: "driverctl override for \(address) names no valid driver ('\(driver)': \(problem)): `driverctl unset-override \(address)` removes it"))
            return result
        }
        result.sources.append(BootBindingSource(mechanism: .driverctl, driver: driver, target: .address(address), location: location))
        return result
    }

    /// A udev rules file: each rule that assigns `ATTR{driver_override}="DRIVER"`, selecting its
    /// device by `KERNEL=="ADDRESS"` or by `ATTR{vendor}`/`ATTR{device}`. vfioctl's own rules
    /// (`persist add`) are told apart by `vfioctlRule`. A rule that sets driver_override for
    /// devices it does not name exactly is a problem: which devices it catches cannot be told.
    public static func udevRules(_ text: String, file: String, vfioctlRule: Bool) -> BootBindingDeclarations {
        var result = BootBindingDeclarations()
        for (number, words) in logicalLines(text) {
            let rule = words.joined(separator: " ")
            guard let driver = udevAssignment(rule, key: "ATTR{driver_override}"), !driver.isEmpty else { continue }
            let location = SourceLocation(file: file, line: number)
            let mechanism: BootBindingMechanism = vfioctlRule ? .vfioctlRule : .udevRule
            if let kernel = udevMatch(rule, key: "KERNEL"), let address = try? PCIAddress(parsing: kernel) {
                result.sources.append(BootBindingSource(mechanism: mechanism, driver: driver, target: .address(address), location: location))
            } else if let vendor = udevMatch(rule, key: "ATTR{vendor}").flatMap(udevHex),
                      let device = udevMatch(rule, key: "ATTR{device}").flatMap(udevHex) {
                result.sources.append(BootBindingSource(mechanism: mechanism, driver: driver, target: .model(PCIModelID(vendor: vendor, device: device)), location: location))
            } else {
                result.problems.append(BootBindingProblem(location: location, message: "a udev rule sets driver_override=\(driver) without naming one device (KERNEL==\"ADDRESS\") or one model (ATTR{vendor} and ATTR{device}); vfioctl cannot tell which devices it binds"))
            }
        }
        return result
    }

    /// initramfs-tools' modules list (/etc/initramfs-tools/modules): a module name per line.
    public static func initramfsToolsModules(_ text: String) -> [String] {
        logicalLines(text).map { moduleName($0.words[0]) }
    }

    /// A dracut.conf.d file: the modules of `force_drivers+=" ... "` and `add_drivers+=" ... "`.
    public static func dracutDrivers(_ text: String) -> [String] {
        var modules: [String] = []
        for (_, words) in logicalLines(text) {
            let line = words.joined(separator: " ")
            for key in ["force_drivers", "add_drivers"] where line.hasPrefix(key) {
                guard let equals = line.firstIndex(of: "=") else { continue }
                modules += line[line.index(after: equals)...].trimmingQuotes.split(separator: " ").map { moduleName($0.trimmingQuotes) }.filter { !$0.isEmpty }
            }
        }
        return modules
    }

    /// The value of `KEY="value"` (an assignment: `=` or `:=`, not `==`).
    static func udevAssignment(_ rule: String, key: String) -> String? {
        udevField(rule, key: key, operators: [":=", "="])
    }

    /// The value of `KEY=="value"`.
    static func udevMatch(_ rule: String, key: String) -> String? {
        udevField(rule, key: key, operators: ["=="])
    }

    static func udevField(_ rule: String, key: String, operators: [String]) -> String? {
        for field in rule.split(separator: ",") {
            let field = field.trimmed
            guard field.hasPrefix(key) else { continue }
            let rest = field.dropFirst(key.count)
            for op in operators where rest.hasPrefix(op + "\"") {
                let value = rest.dropFirst(op.count + 1)
                guard let end = value.firstIndex(of: "\"") else { return nil }
                return String(value[..<end])
            }
        }
        return nil
    }

    /// "0x10de" (or "10de") as udev matches a sysfs vendor/device attribute.
    static func udevHex(_ text: String) -> UInt16? {
        let digits = text.hasPrefix("0x") ? text.dropFirst(2) : Substring(text)
        guard !digits.isEmpty, digits.count <= 4, digits.allSatisfy(\.isHexDigit) else { return nil }
        return UInt16(digits, radix: 16)
    }
}

extension StringProtocol {
    /// Without one pair of surrounding double or single quotes.
    var trimmingQuotes: Substring {
        let text = Substring(self)
        if text.count >= 2, let first = text.first, first == "\"" || first == "'", text.last == first {
            return text.dropFirst().dropLast()
        }
        if let first = text.first, first == "\"" || first == "'" { return text.dropFirst() }
        if let last = text.last, last == "\"" || last == "'" { return text.dropLast() }
        return text
    }

    /// Without surrounding spaces and tabs.
    var trimmed: Substring {
        var text = Substring(self)
        while let first = text.first, first == " " || first == "\t" || first == "\r" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" || last == "\r" { text = text.dropLast() }
        return text
    }
}
