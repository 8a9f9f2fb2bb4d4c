import Foundation
import PCIInventory

/// The tool that builds the host's initramfs: the generated files differ.
public enum InitramfsTool: String, Sendable, CaseIterable, Codable {
    case initramfsTools = "initramfs-tools"
    case dracut

    /// Which one the host uses, from the programs it has; nil when neither or both (then the
    /// user names it).
    public static func detect(hasUpdateInitramfs: Bool, hasDracut: Bool) -> InitramfsTool? {
        switch (hasUpdateInitramfs, hasDracut) {
        case (true, false): .initramfsTools
        case (false, true): .dracut
        default: nil
        }
    }

    /// The command that rebuilds every installed kernel's initramfs with the files in it.
    public var regenerateCommand: [String] {
        switch self {
        case .initramfsTools: ["update-initramfs", "-u", "-k", "all"]
        case .dracut: ["dracut", "--force", "--regenerate-all"]
        }
    }
}

/// One device bound from the initramfs, and the native driver's module ordered after vfio-pci.
public struct EarlyDevice: Sendable, Equatable, Comparable {
    /// The device bound to vfio-pci from the initramfs.
    public let address: PCIAddress
    /// nil when the device has no modular native driver (none known, or built into the kernel).
    /// Always a valid module name: it is written into modprobe.d and the record as it stands.
    public let nativeModule: String?

    /// A device and its native driver's module (nil when none is modular). A module name that is
    /// not one (`EarlyBindingPlan.isValidModuleName`: what a crafted sysfs could give) is dropped,
    /// as no softdep could name it: the record and the files then agree.
    public init(address: PCIAddress, nativeModule: String?) {
        self.address = address
        self.nativeModule = nativeModule.flatMap { EarlyBindingPlan.isValidModuleName($0) ? $0 : nil }
    }

    /// Ordered by address, so generated files list devices in one stable order.
    public static func < (a: EarlyDevice, b: EarlyDevice) -> Bool { a.address < b.address }
}

/// The files that bind devices to vfio-pci from the initramfs, before udev's coldplug loads any
/// native driver. Pure: contents from the device list, paths relative to the configuration root.
///
/// - an address-keyed `driver_override` written from the initramfs (initramfs-tools: an init-top
///   script, named to sort before udev's; dracut: a pre-udev hook in a module of its own) that
///   also hands over a device a built-in driver took before the script ran;
/// - `softdep MODULE pre: vfio-pci` in modprobe.d, so loading the native module loads vfio-pci
///   first (and vfio-pci binds the overridden device the moment it registers);
/// - vfio-pci and vfio_iommu_type1 in the initramfs (the hook, or the dracut module).
public enum EarlyBindingPlan {
    /// One generated file.
    public struct File: Sendable, Equatable {
        /// Relative to the configuration root ("etc/modprobe.d/vfioctl-early.conf").
        public let path: String
        /// The whole text of the file.
        public let contents: String
        /// Whether it is a script the initramfs tool runs (mode 0755) rather than configuration.
        public let executable: Bool
    }

    /// Every file of ours has a line starting with this, so a file of the same name that is
    /// someone else's is never overwritten or deleted.
    public static let marker = "# vfioctl persist --early:"
    /// The modprobe.d file with the softdeps that load vfio-pci before each native module.
    public static let modprobeFile = "etc/modprobe.d/vfioctl-early.conf"
    /// initramfs-tools' hook: puts vfio-pci, vfio_iommu_type1 and the softdep file in the image.
    public static let initramfsToolsHook = "etc/initramfs-tools/hooks/vfioctl-early"
    /// "00-": initramfs-tools orders init-top scripts without prerequisites by name, so this runs
    /// before `udev` (whose coldplug loads the native modules).
    public static let initramfsToolsScript = "etc/initramfs-tools/scripts/init-top/00-vfioctl-early"
    /// dracut's module of ours ("90": after the base modules, so its hook can rely on them).
    public static let dracutModuleDirectory = "usr/lib/dracut/modules.d/90vfioctl-early"
    /// The module's setup script: what dracut puts in the image.
    public static let dracutSetup = dracutModuleDirectory + "/module-setup.sh"
    /// The pre-udev hook that writes driver_override for the listed addresses.
    public static let dracutHook = dracutModuleDirectory + "/vfioctl-early.sh"
    /// dracut.conf.d entry that adds our module and the vfio drivers to every image.
    public static let dracutConf = "etc/dracut.conf.d/vfioctl-early.conf"

    /// Every path a plan may write, for either tool: the only paths a record may name.
    public static let knownPaths: Set<String> = [modprobeFile, initramfsToolsHook, initramfsToolsScript, dracutSetup, dracutHook, dracutConf]

    /// A module name as modprobe.d and the shell scripts may carry it.
    public static func isValidModuleName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64 && name.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
        }
    }

    /// The files for `devices` (none for an empty list: everything is removed).
    public static func files(for devices: [EarlyDevice], tool: InitramfsTool) -> [File] {
        let devices = devices.sorted()
        guard !devices.isEmpty else { return [] }
        let modules = Set(devices.compactMap(\.nativeModule)).sorted()
        let addresses = devices.map(\.address.description).joined(separator: " ")
        var modprobe = "# Written by vfioctl; `vfioctl persist remove ADDRESS` removes it.\n\(marker) load vfio-pci before these drivers, so it takes\n# the devices whose driver_override the initramfs set (\(addresses)) first.\n"
        for module in modules { modprobe += "softdep \(module) pre: vfio-pci\n" }
        let modprobeFile = File(path: Self.modprobeFile, contents: modprobe, executable: false)
        switch tool {
        case .initramfsTools:
            let hook = """
                #!/bin/sh
                \(marker) put vfio-pci (and its IOMMU backend) and the softdeps into the initramfs.
                PREREQ=""
                prereqs() { echo "$PREREQ"; }
                case "$1" in prereqs) prereqs; exit 0 ;; esac
                . /usr/share/initramfs-tools/hook-functions
                manual_add_modules vfio_iommu_type1 vfio_pci
                mkdir -p "${DESTDIR}/etc/modprobe.d"
                cp /\(Self.modprobeFile) "${DESTDIR}/etc/modprobe.d/"

                """
            let script = """
                #!/bin/sh
                \(marker) bind \(addresses) to vfio-pci before udev loads their drivers.
                PREREQ=""
                prereqs() { echo "$PREREQ"; }
                case "$1" in prereqs) prereqs; exit 0 ;; esac
                \(overrideBody(devices))
                """
            return [modprobeFile, File(path: initramfsToolsHook, contents: hook, executable: true),
                    File(path: initramfsToolsScript, contents: script, executable: true)]
        case .dracut:
            let setup = """
                #!/bin/bash
                \(marker) dracut module: bind \(addresses) to vfio-pci before udev.
                check() { return 0; }
                depends() { return 0; }
                installkernel() { hostonly='' instmods vfio vfio_iommu_type1 vfio_pci; }
                install() {
                    inst_hook pre-udev 00 "$moddir/vfioctl-early.sh"
                    inst_simple /\(Self.modprobeFile)
                }

                """
            // dracut sources its hooks: no exit, and names of our own.
            let hook = "#!/bin/sh\n\(marker) bind \(addresses) to vfio-pci before udev loads their drivers.\n" + overrideBody(devices)
            let conf = "# Written by vfioctl.\n\(marker) always include the module that binds devices to vfio-pci early.\nadd_dracutmodules+=\" vfioctl-early \"\n"
            return [modprobeFile, File(path: dracutSetup, contents: setup, executable: true),
                    File(path: dracutHook, contents: hook, executable: true),
                    File(path: dracutConf, contents: conf, executable: false)]
        }
    }

    /// Whether `bytes` are a file of ours: a line starts with the marker.
    public static func isOurs(_ bytes: [UInt8]) -> Bool {
        let text = String(decoding: bytes, as: UTF8.self)
        return text.hasPrefix(EarlyBindingPlan.marker) || text.contains("\n" + EarlyBindingPlan.marker)
    }

    /// The canonical PCI addresses a file names.
    public static func addresses(in bytes: [UInt8]) -> Set<PCIAddress> {
        let text = String(decoding: bytes, as: UTF8.self)
        let words = text.split { !($0.isHexDigit || $0 == ":" || $0 == ".") }
        return Set(words.compactMap { word in
            guard case .success(let address) = BindingValidation.canonicalAddress(String(word)) else { return nil }
            return address
        })
    }

    /// The shell that sets the overrides, for both tools: keyed on the address (never
    /// vendor:device); a device a built-in driver already took is unbound, then everything
    /// overridden and driverless is offered to vfio-pci.
    static func overrideBody(_ devices: [EarlyDevice]) -> String {
        let addresses = devices.map(\.address.description).joined(separator: " ")
        return """
            for vfioctl_addr in \(addresses); do
                vfioctl_dev=/sys/bus/pci/devices/$vfioctl_addr
                [ -e "$vfioctl_dev/driver_override" ] || continue
                echo vfio-pci > "$vfioctl_dev/driver_override"
                if [ -e "$vfioctl_dev/driver" ] && [ "$(basename "$(readlink "$vfioctl_dev/driver")")" != vfio-pci ]; then
                    echo "$vfioctl_addr" > "$vfioctl_dev/driver/unbind"
                fi
            done
            modprobe -q vfio-pci 2>/dev/null
            for vfioctl_addr in \(addresses); do
                [ -e "/sys/bus/pci/devices/$vfioctl_addr/driver" ] || echo "$vfioctl_addr" > /sys/bus/pci/drivers_probe 2>/dev/null
            done
            unset vfioctl_addr vfioctl_dev

            """
    }
}

/// What `persist add --early` wrote, kept beside the files so `persist remove` can undo it and
/// `persist check` can tell what the next boot does. Read back, nothing is trusted: addresses
/// must be canonical, modules valid names, and the files only the ones a plan writes.
public struct EarlyBindingRecord: Sendable, Equatable {
    /// The initramfs tool the files were written for.
    public var tool: InitramfsTool
    /// The devices bound early, each with its native module.
    public var devices: [EarlyDevice]
    /// Paths (relative to the configuration root) written for the current device list.
    public var files: [String]

    /// Where the record lives, relative to the configuration root.
    public static let path = "etc/vfioctl/early-binding.json"

    /// A record of what one `persist add --early` state wrote.
    public init(tool: InitramfsTool, devices: [EarlyDevice], files: [String]) {
        self.tool = tool
        self.devices = devices
        self.files = files
    }

    /// The record as one JSON line (values validated on the way in, so interpolation is safe).
    public func encoded() -> String {
        let items = devices.sorted().map { device -> String in
            let module = device.nativeModule.map { "\"\($0)\"" } ?? "null"
            return "{\"address\": \"\(device.address)\", \"native_module\": \(module)}"
        }
        let files = files.sorted().map { "\"\($0)\"" }
        return "{\"tool\": \"\(tool.rawValue)\", \"devices\": [\(items.joined(separator: ", "))], \"files\": [\(files.joined(separator: ", "))]}\n"
    }

    /// Parses a record read from disk; `.untrustedSysfs` for anything vfioctl would not have written.
    public static func decode(_ text: String) -> Result<EarlyBindingRecord, BindingError> {
        struct Raw: Decodable {
            struct Device: Decodable { let address: String; let native_module: String? }
            let tool: String
            let devices: [Device]
            let files: [String]
        }
        let bad = { (reason: String) in Result<EarlyBindingRecord, BindingError>.failure(.untrustedSysfs(path: Self.path, reason: reason)) }
        guard let raw = try? JSONDecoder().decode(Raw.self, from: Data(text.utf8)) else { return bad("it is not the JSON vfioctl writes") }
        guard let tool = InitramfsTool(rawValue: raw.tool) else { return bad("unknown initramfs tool \"\(raw.tool)\"") }
        var devices: [EarlyDevice] = []
        for item in raw.devices {
            guard case .success(let address) = BindingValidation.canonicalAddress(item.address) else { return bad("\"\(item.address)\" is not a canonical PCI address") }
            if let module = item.native_module, !EarlyBindingPlan.isValidModuleName(module) { return bad("\"\(module)\" is not a module name") }
            devices.append(EarlyDevice(address: address, nativeModule: item.native_module))
        }
        for file in raw.files where !EarlyBindingPlan.knownPaths.contains(file) { return bad("it names \(file), which vfioctl never writes") }
        return .success(EarlyBindingRecord(tool: tool, devices: devices, files: raw.files))
    }
}

