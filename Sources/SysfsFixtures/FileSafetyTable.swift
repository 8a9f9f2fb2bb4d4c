/// Every path vfioctl reads or writes, with a command that touches it on a fixture host and what
/// each kind of wrong file in its place must give (issue 20). `FileKindTests` plants each kind
/// at each path and runs the command; the README states how many cases that is.
public enum FileSafetyTable {
    /// A kind of file planted where vfioctl expects its own.
    public enum Planted: String, CaseIterable, Sendable {
        case fifo, directory, characterDevice = "character-device", symlinkOutOfRoot = "symlink-out-of-root"
        case unreadable, readOnlyMount = "read-only-mount", missing, oversized
    }

    /// What a case must end with.
    public enum Expected: Equatable, Sendable {
        /// This exit status.
        case status(Int32)
        /// The status of the same command with the ordinary file (the file is optional, or a
        /// read that a read-only mount does not change).
        case asOrdinary
    }

    /// The directories a command's arguments name, filled in per case.
    public enum Place: String, Sendable {
        case sysfs = "{SYSFS}", proc = "{PROC}", state = "{STATE}", rules = "{RULES}", config = "{CONFIG}", output = "{OUT}", input = "{IN}"
    }

    /// One path.
    public struct Entry: Sendable {
        /// What the path is.
        public let name: String
        /// Which directory it is in.
        public let place: Place
        /// The path under that directory.
        public let path: String
        /// vfioctl's arguments; `{SYSFS}`, `{PROC}`... stand for the case's directories.
        public let arguments: [String]
        /// The ordinary contents (nil: the ordinary state is no file, as for an output).
        public let ordinary: [UInt8]?
        /// Whether vfioctl writes the path (then a planted file must stay what it was).
        public let writes: Bool
        /// The outcome for each planted kind.
        public let expected: [Planted: Expected]
        /// The fixture host the command runs on.
        public var host: FixtureHost = .gpuWorkstation
    }

    static let failsUnlessOrdinary: [Planted: Expected] = [
        .fifo: .status(1), .directory: .status(1), .characterDevice: .status(1), .symlinkOutOfRoot: .status(1),
        .unreadable: .status(1), .readOnlyMount: .asOrdinary, .missing: .status(1), .oversized: .status(1),
    ]
    static let optional: [Planted: Expected] = Dictionary(uniqueKeysWithValues: Planted.allCases.map { ($0, Expected.asOrdinary) })
    static let writtenFile: [Planted: Expected] = [
        .fifo: .status(1), .directory: .status(1), .characterDevice: .status(1), .symlinkOutOfRoot: .status(1),
        .unreadable: .status(1), .readOnlyMount: .status(1), .missing: .asOrdinary, .oversized: .status(1),
    ]

    /// Failures with exit 3: evidence a safety check needs could not be read, so the command
    /// refuses (unless --force), as it does for a device in use.
    static let refusesUnlessOrdinary: [Planted: Expected] = failsUnlessOrdinary.mapValues { $0 == .status(1) ? .status(3) : $0 }
    /// A boot-binding file that cannot be read is reported (`persist check` names it and cannot
    /// say the next boot binds the device: exit 2), never waited on or written.
    static let reportedUnlessOrdinary: [Planted: Expected] = [
        .fifo: .status(2), .directory: .status(2), .characterDevice: .status(2), .symlinkOutOfRoot: .asOrdinary,
        .unreadable: .status(2), .readOnlyMount: .asOrdinary, .missing: .asOrdinary, .oversized: .status(2),
    ]

    static let gpu = "0000:01:00.0"
    /// The workstation with its GPU unbound and a resizable BAR1, for `rebar`.
    static var resizableHost: FixtureHost {
        var host = FixtureHost.gpuWorkstation
        host.devices = host.devices.map { device in
            guard device.address.description == gpu else { return device }
            var device = device
            device.resizableBARs = [.sizes(1, codes: 8...15)]
            device.driver = nil
            return device
        }
        return host
    }
    static let persistCheck = ["persist", "check", gpu, "--sysfs-root", "{SYSFS}", "--modprobe-dir", "{CONFIG}/etc/modprobe.d"] + bindingDirs
    static let bindingDirs = ["--rules-dir", "{RULES}", "--config-root", "{CONFIG}", "--state-dir", "{STATE}", "--proc-root", "{PROC}"]

    /// The table.
    public static let entries: [Entry] = [
        Entry(name: "sysfs rom attribute (rom check)", place: .sysfs, path: "bus/pci/devices/\(gpu)/rom",
              arguments: ["rom", "check", gpu, "--sysfs-root", "{SYSFS}"], ordinary: FixtureROMImage.rom([FixtureROMImage(vendorID: 0x10de, deviceID: 0x2204, code: .legacyX86, blocks: 8)]),
              writes: false, expected: failsUnlessOrdinary),
        Entry(name: "sysfs rom attribute (rom dump)", place: .sysfs, path: "bus/pci/devices/\(gpu)/rom",
              arguments: ["rom", "dump", gpu, "--sysfs-root", "{SYSFS}", "--output", "{OUT}/dump.rom"], ordinary: FixtureROMImage.rom([FixtureROMImage(vendorID: 0x10de, deviceID: 0x2204, code: .legacyX86, blocks: 8)]),
              writes: false, expected: failsUnlessOrdinary),
        Entry(name: "sysfs config attribute", place: .sysfs, path: "bus/pci/devices/\(gpu)/config",
              arguments: ["show", gpu, "--sysfs-root", "{SYSFS}"], ordinary: nil, writes: false, expected: optional),
        Entry(name: "sysfs resource attribute", place: .sysfs, path: "bus/pci/devices/\(gpu)/resource",
              arguments: ["show", gpu, "--sysfs-root", "{SYSFS}"], ordinary: nil, writes: false, expected: optional),
        Entry(name: "sysfs sriov_totalvfs attribute", place: .sysfs, path: "bus/pci/devices/0000:08:00.0/sriov_totalvfs",
              arguments: ["show", "0000:08:00.0", "--sysfs-root", "{SYSFS}"], ordinary: nil, writes: false, expected: optional),
        // The evidence for the root-disk refusal: without it `persist add` and `bind` refuse.
        Entry(name: "/proc/self/mountinfo (persist add)", place: .proc, path: "self/mountinfo",
              arguments: ["persist", "add", gpu, "--sysfs-root", "{SYSFS}"] + bindingDirs, ordinary: Array(HostEnvironment.mountTable.utf8),
              writes: false, expected: refusesUnlessOrdinary),
        Entry(name: "/proc/cmdline (persist check)", place: .proc, path: "cmdline",
              arguments: ["persist", "check", gpu, "--sysfs-root", "{SYSFS}", "--modprobe-dir", "{CONFIG}/none"] + bindingDirs, ordinary: Array("ro quiet\n".utf8),
              writes: false, expected: optional),
        Entry(name: "modprobe.d file (persist check)", place: .config, path: "etc/modprobe.d/other.conf",
              arguments: persistCheck, ordinary: Array("options snd_hda_intel index=1\n".utf8), writes: false, expected: reportedUnlessOrdinary),
        Entry(name: "driverctl override (persist check)", place: .config, path: "etc/driverctl.d/pci-0000:03:00.0",
              arguments: persistCheck, ordinary: Array("vfio-pci\n".utf8), writes: false, expected: reportedUnlessOrdinary),
        Entry(name: "udev rule under --config-root (persist check)", place: .config, path: "etc/udev/rules.d/70-other.rules",
              arguments: persistCheck, ordinary: Array("# nothing here\n".utf8), writes: false, expected: reportedUnlessOrdinary),
        Entry(name: "sysfs resourceN_resize attribute (rebar)", place: .sysfs, path: "bus/pci/devices/\(gpu)/resource1_resize",
              arguments: ["rebar", gpu, "--bar", "1", "--size", "512M", "--sysfs-root", "{SYSFS}", "--state-dir", "{STATE}"], ordinary: nil,
              writes: true, expected: optional, host: resizableHost),
        Entry(name: "binding journal (restore)", place: .state, path: "journal.jsonl",
              arguments: ["restore", "--sysfs-root", "{SYSFS}", "--state-dir", "{STATE}", "--proc-root", "{PROC}"], ordinary: [],
              writes: false, expected: [.fifo: .status(1), .directory: .status(1), .characterDevice: .status(1), .symlinkOutOfRoot: .status(1),
                                         .unreadable: .status(1), .readOnlyMount: .asOrdinary, .missing: .asOrdinary, .oversized: .status(1)]),
        Entry(name: "udev rule (persist add)", place: .rules, path: "90-vfioctl-\(gpu).rules",
              arguments: ["persist", "add", gpu, "--sysfs-root", "{SYSFS}"] + bindingDirs, ordinary: nil, writes: true, expected: writtenFile),
        Entry(name: "udev rule (persist remove)", place: .rules, path: "90-vfioctl-\(gpu).rules",
              arguments: ["persist", "remove", gpu, "--sysfs-root", "{SYSFS}", "--rules-dir", "{RULES}", "--config-root", "{CONFIG}"], ordinary: nil, writes: true,
              expected: writtenFile.merging([.readOnlyMount: .asOrdinary]) { $1 }),
        Entry(name: "early-binding softdeps (persist add --early)", place: .config, path: "etc/modprobe.d/vfioctl-early.conf",
              arguments: ["persist", "add", gpu, "--early", "--initramfs", "initramfs-tools", "--sysfs-root", "{SYSFS}"] + bindingDirs, ordinary: nil,
              writes: true, expected: writtenFile),
        Entry(name: "early-binding init-top script (persist add --early)", place: .config, path: "etc/initramfs-tools/scripts/init-top/00-vfioctl-early",
              arguments: ["persist", "add", gpu, "--early", "--initramfs", "initramfs-tools", "--sysfs-root", "{SYSFS}"] + bindingDirs, ordinary: nil,
              writes: true, expected: writtenFile),
        Entry(name: "early-binding record (persist add --early)", place: .config, path: "etc/vfioctl/early-binding.json",
              arguments: ["persist", "add", gpu, "--early", "--initramfs", "initramfs-tools", "--sysfs-root", "{SYSFS}"] + bindingDirs, ordinary: nil,
              writes: true, expected: writtenFile),
        Entry(name: "CDI spec (cdi --output)", place: .output, path: "spec.json",
              arguments: ["cdi", "--sysfs-root", "{SYSFS}", "--output", "{OUT}/spec.json"], ordinary: nil, writes: true,
              // A regular file of any size or mode is replaced whole (rename needs no read).
              expected: writtenFile.merging([.unreadable: .asOrdinary, .oversized: .asOrdinary]) { $1 }),
        Entry(name: "ROM image (rom dump --output)", place: .output, path: "dump.rom",
              arguments: ["rom", "dump", gpu, "--sysfs-root", "{SYSFS}", "--output", "{OUT}/dump.rom"], ordinary: nil, writes: true,
              expected: writtenFile.merging([.unreadable: .asOrdinary, .oversized: .asOrdinary]) { $1 }),
        Entry(name: "ROM file (rom check --file)", place: .input, path: "vbios.rom",
              arguments: ["rom", "check", "--file", "{IN}/vbios.rom"], ordinary: FixtureROMImage.rom([FixtureROMImage(vendorID: 0x10de, deviceID: 0x2204, code: .legacyX86, blocks: 8)]),
              // A file the user names may be a symlink to anywhere: it is only read.
              writes: false, expected: failsUnlessOrdinary.merging([.symlinkOutOfRoot: .asOrdinary]) { $1 }),
    ]

    /// Cases the table makes: every entry with every planted kind.
    public static var caseCount: Int { entries.count * Planted.allCases.count }
}
