import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PCIInventory
import TextFormat

/// What decides which driver takes a device at the next boot: plain data for `BootCheck`.
public struct BootFacts: Sendable, Equatable {
    /// The device.
    public var address: PCIAddress
    /// vendor:device, lower-case hex ("10de:2204").
    public var id: String
    /// Other devices with the same vendor:device.
    public var sameModel: [PCIAddress] = []
    /// The driver that takes the device when vfio-pci does not (its current one, or the one
    /// the journal recorded); nil when none is known.
    public var nativeDriver: String?
    /// Whether that driver is built into the kernel (no module to order or blacklist).
    public var nativeBuiltIn = false
    /// The vfioctl udev rule for the device exists.
    public var udevRule = false
    /// Module names blacklisted in modprobe.d or with modprobe.blacklist= on the command line.
    public var blacklisted: Set<String> = []
    /// vendor:device pairs from vfio-pci `ids=` (modprobe.d options or vfio-pci.ids=).
    public var vfioIDs: Set<String> = []
    /// Modules that modprobe.d says load vfio-pci first (`softdep MODULE pre: vfio-pci`).
    public var softdepBeforeVFIO: Set<String> = []
    /// `persist add --early` recorded the device: the initramfs sets its driver_override.
    public var earlyRecorded = false
    /// The initramfs tool the early files are for.
    public var earlyTool: InitramfsTool?
    /// The early files on disk are what vfioctl writes for the record.
    public var earlyFilesCurrent = false
    /// The running kernel's initramfs is newer than the early files (nil: no image found).
    public var initramfsRebuilt: Bool?
    /// Why `bind` would refuse the device (`BindPlan.persistRefusals`), judged afresh on every
    /// check: a binding made safe may have become unsafe (root moved to that disk).
    public var refusals: [String] = []
    /// Early-binding files of vfioctl's (found by their marker) that name the device although
    /// no record lists it: left by a failed change; `persist remove` deletes them.
    public var unrecordedEarlyFiles: [String] = []
    /// Address-keyed bindings not made by vfioctl: driverctl overrides and udev rules that
    /// set driver_override (`BootBindingPlan.othersBinding`, less the ids= ones counted above).
    public var otherBindings: [BootBindingSource] = []

    /// Facts for the device at `address` with IDs `id`, nothing else known yet.
    public init(address: PCIAddress, id: String) {
        self.address = address
        self.id = id
    }
}

/// One line of `persist check`: how the next boot will treat the device.
public struct BootFinding: Sendable, Equatable, CustomStringConvertible {
    /// How the next boot will treat the device: fine, worth a look, or not as wanted.
    public enum Status: String, Sendable { case ok, warning, problem }
    /// The finding's weight.
    public let status: Status
    /// What was found, in words a user can act on.
    public let text: String
    /// "[status] text".
    public var description: String { "[\(status.rawValue)] \(text)" }
}

/// Judges `BootFacts`. Pure.
public enum BootCheck {
    /// Whether the initramfs of the next boot sets the device's driver_override, before udev
    /// loads any native driver.
    public static func bindsEarly(_ facts: BootFacts) -> Bool {
        facts.earlyRecorded && facts.earlyFilesCurrent && facts.initramfsRebuilt == true
    }

    /// Whether the next boot binds a device that `bind` would refuse (`persist check` exits 3).
    public static func bindsUnsafely(_ facts: BootFacts) -> Bool {
        !facts.refusals.isEmpty && judge(facts).willBind
    }

    /// The findings, and whether the device will come up on vfio-pci.
    public static func judge(_ facts: BootFacts) -> (willBind: Bool, findings: [BootFinding]) {
        var findings: [BootFinding] = []
        for refusal in facts.refusals {
            findings.append(BootFinding(status: .problem, text: "binding \(facts.address) at boot is unsafe: \(refusal); undo it with `vfioctl persist remove \(facts.address)`"))
        }
        if !facts.unrecordedEarlyFiles.isEmpty {
            findings.append(BootFinding(status: .problem, text: "early-binding files of vfioctl's name \(facts.address) but no record lists them (left by a failed change): \(facts.unrecordedEarlyFiles.joined(separator: ", ")); `vfioctl persist remove \(facts.address)` deletes them"))
        }
        if facts.earlyRecorded {
            let regenerate = (facts.earlyTool ?? .initramfsTools).regenerateCommand.joined(separator: " ")
            if !facts.earlyFilesCurrent {
                findings.append(BootFinding(status: .warning, text: "the early-binding files for \(facts.address) were changed or removed since vfioctl wrote them: run `vfioctl persist add --early \(facts.address)` again, then `\(regenerate)`"))
            } else if facts.initramfsRebuilt == true {
                findings.append(BootFinding(status: .ok, text: "the initramfs sets driver_override=vfio-pci for \(facts.address) before udev loads any driver (bound early)"))
            } else {
                let why = facts.initramfsRebuilt == nil ? "no initramfs of the running kernel was found to compare" : "the initramfs is older than the early-binding files"
                findings.append(BootFinding(status: .warning, text: "\(why): run `\(regenerate)` so the next boot binds \(facts.address) early"))
            }
        }
        let byIDs = facts.vfioIDs.contains(facts.id)
        if byIDs {
            let others = facts.sameModel.map(\.description).joined(separator: " ")
            findings.append(BootFinding(status: facts.sameModel.isEmpty ? .ok : .warning, text: facts.sameModel.isEmpty
                ? "vfio-pci ids= lists \(facts.id): vfio-pci claims it when it loads"
                : "vfio-pci ids= lists \(facts.id), which also takes every other device of that model: \(others); use `vfioctl persist add \(facts.address)` (keyed on the address) and drop \(facts.id) from ids="))
        }
        if facts.udevRule {
            findings.append(BootFinding(status: .ok, text: "udev rule for \(facts.address): driver_override=vfio-pci when the device is added, and a reprobe"))
        }
        var byOther = false, contested = false
        for source in facts.otherBindings where !source.mechanism.matchesByModel {
            if source.driver == BindPlan.targetDriver {
                byOther = true
                findings.append(BootFinding(status: .ok, text: "\(source.mechanism.rawValue) binds \(facts.address) to vfio-pci (\(source.location))"))
            } else {
                contested = true
                findings.append(BootFinding(status: .problem, text: "\(source.mechanism.rawValue) binds \(facts.address) to \(source.driver) (\(source.location)), against vfio-pci: remove one of the two"))
            }
        }
        guard facts.udevRule || byIDs || facts.earlyRecorded || byOther || !facts.unrecordedEarlyFiles.isEmpty else {
            if !contested {
                findings.append(BootFinding(status: .problem, text: "nothing binds \(facts.address) to vfio-pci at boot: run `vfioctl persist add \(facts.address)`"))
            }
            return (false, findings)
        }
        if let native = facts.nativeDriver, native != BindPlan.targetDriver {
            let module = native.replacingOccurrences(of: "-", with: "_")
            if facts.blacklisted.contains(module) {
                findings.append(BootFinding(status: .ok, text: "\(native) is blacklisted: it takes no device (of any kind) by itself"))
            } else if facts.nativeBuiltIn {
                findings.append(BootFinding(status: .warning, text: "\(native) is built into the kernel: it drives the device from boot until the rule takes it away, and a driver that cannot let go then leaves it unusable; boot with vfio-pci.ids=\(facts.id) only if no other device has that ID"))
            } else if facts.softdepBeforeVFIO.contains(module) {
                findings.append(BootFinding(status: .ok, text: "softdep \(module) pre: vfio-pci: vfio-pci loads first"))
            } else {
                findings.append(BootFinding(status: .warning, text: "\(native) can load before vfio-pci and take the device first (then the rule takes it away): `vfioctl persist add --early \(facts.address)` sets the override from the initramfs and adds `softdep \(module) pre: vfio-pci` to /etc/modprobe.d"))
            }
        }
        // Another mechanism binding it to another driver races vfio-pci's: not bound for sure.
        return (!contested, findings)
    }
}

/// Reads `BootFacts` for one device from sysfs, modprobe.d, the kernel command line, the udev
/// rules directory and the journal.
public struct BootFactsReader {
    /// The sysfs root.
    public var sysfs: SysfsRoot
    /// The proc root (the kernel command line, loaded modules).
    public var procRoot = "/proc"
    /// Where modprobe configuration is read, in modprobe's order.
    public var modprobeDirectories = ["/etc/modprobe.d", "/usr/lib/modprobe.d", "/lib/modprobe.d", "/run/modprobe.d"]
    /// Where vfioctl's udev rules are.
    public var rulesDirectory = UdevRules.defaultDirectory
    /// The binding journal, if one is read.
    public var journal: BindingJournal?
    /// Where the early-binding record, its files and /boot are.
    public var configRoot = "/"
    /// The host's facts, for `bind`'s safety rules (nil: not judged).
    public var hostFacts: HostFacts?
    let reader = SysfsReader()

    /// A reader with the host's default directories under `sysfs`.
    public init(sysfs: SysfsRoot) { self.sysfs = sysfs }

    /// The facts about `device`; what cannot be read is left out, never fatal.
    public func read(_ device: PCIDevice, inventory: PCIInventory) -> BootFacts {
        let id = hex4(device.vendorID ?? 0) + ":" + hex4(device.deviceID ?? 0)
        var facts = BootFacts(address: device.address, id: id)
        facts.sameModel = inventory.devices.filter { $0.address != device.address && $0.vendorID == device.vendorID && $0.deviceID == device.deviceID }.map(\.address)
        let recorded = (try? journal?.entry(for: device.address)) ?? nil
        facts.nativeDriver = device.driver == BindPlan.targetDriver ? recorded?.originalDriver : device.driver
        if let native = facts.nativeDriver {
            // A modular driver links to its module; a built-in one has none.
            facts.nativeBuiltIn = !reader.exists(sysfs.appending("bus/pci/drivers/\(native)/module"))
        }
        facts.udevRule = UdevRules(directory: rulesDirectory).list().contains(device.address)
        var lines: [String] = []
        for directory in modprobeDirectories {
            for name in (reader.listDirectory(directory) ?? []).sorted() where name.hasSuffix(".conf") {
                if let bytes = reader.readBytes(directory + "/" + name, limit: 1 << 16) {
                    lines += String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
                }
            }
        }
        for line in lines {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let keyword = words.first, !keyword.hasPrefix("#") else { continue }
            switch keyword {
            case "blacklist" where words.count >= 2:
                facts.blacklisted.insert(words[1].replacingOccurrences(of: "-", with: "_"))
            case "options" where words.count >= 3 && words[1].replacingOccurrences(of: "-", with: "_") == "vfio_pci":
                for option in words.dropFirst(2) where option.hasPrefix("ids=") { facts.vfioIDs.formUnion(Self.ids(option)) }
            case "softdep" where words.count >= 4:
                if let pre = words.firstIndex(of: "pre:"), words[(pre + 1)...].contains(where: { $0 == "vfio-pci" || $0 == "vfio_pci" }) {
                    facts.softdepBeforeVFIO.insert(words[1].replacingOccurrences(of: "-", with: "_"))
                }
            default: break
            }
        }
        readEarly(into: &facts)
        if let hostFacts { facts.refusals = BindPlan.persistRefusals(device, facts: hostFacts).map(\.evidence) }
        let commandLine = reader.readString(procRoot + "/cmdline") ?? ""
        for word in commandLine.split(separator: " ").map(String.init) {
            if word.hasPrefix("vfio-pci.ids=") || word.hasPrefix("vfio_pci.ids=") {
                facts.vfioIDs.formUnion(Self.ids(String(word.drop { $0 != "=" })))
            } else if word.hasPrefix("modprobe.blacklist=") {
                for module in word.dropFirst("modprobe.blacklist=".count).split(separator: ",") {
                    facts.blacklisted.insert(module.replacingOccurrences(of: "-", with: "_"))
                }
            }
        }
        return facts
    }

    /// The early-binding record, its files, and whether the running kernel's initramfs was
    /// built after them (by modification time: the image is not unpacked).
    func readEarly(into facts: inout BootFacts) {
        let store = EarlyBindingStore(configRoot: configRoot)
        let record = (try? store.record()) ?? nil
        facts.unrecordedEarlyFiles = store.unrecordedFiles(naming: facts.address, record: record).map(store.absolute)
        guard let record, record.devices.contains(where: { $0.address == facts.address }) else { return }
        facts.earlyRecorded = true
        facts.earlyTool = record.tool
        facts.earlyFilesCurrent = store.filesAreCurrent(record)
        guard let release = reader.readString(procRoot + "/sys/kernel/osrelease"), BindingValidation.driverNameProblem(release) == nil else { return }
        let images = ["boot/initrd.img-\(release)", "boot/initramfs-\(release).img"].map(store.absolute)
        let modified = { (path: String) -> Double? in
            var status = stat()
            guard stat(path, &status) == 0 else { return nil }
            return Double(status.st_mtim.tv_sec) + Double(status.st_mtim.tv_nsec) / 1e9
        }
        guard let image = images.compactMap(modified).max() else { return }
        let written = record.files.compactMap { modified(store.absolute($0)) }.max() ?? 0
        facts.initramfsRebuilt = image >= written
    }

    /// "ids=10de:2204,10de:1aef" (or "=..."): the vendor:device pairs, lower-case; subvendor
    /// and class fields after them are ignored, and so are malformed entries (`persist check`
    /// names them through `BootBindingPlan`).
    static func ids(_ option: String) -> Set<String> {
        let list = option.drop { $0 != "=" }.dropFirst()
        return Set(BootBindingParser.ids(list, location: SourceLocation(file: "")).ids.map(\.description))
    }
}
