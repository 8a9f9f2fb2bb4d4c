import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads every way the host binds devices at boot, changing nothing: the kernel command line,
/// modprobe.d, driverctl's overrides, udev rules that set driver_override, initramfs module
/// lists and vfioctl's own rules and early files. Everything is read under `configRoot` (and
/// `procRoot` for the command line), so fixtures stand in for a host. What cannot be read
/// becomes a problem naming the file; nothing here throws.
public struct BootBindingReader {
    /// The root /etc, /usr/lib and /run are read under ("/" on the host).
    public var configRoot: String
    /// The proc root (its `cmdline`).
    public var procRoot = "/proc"
    /// Where vfioctl's own udev rules are (`persist --rules-dir`); nil: etc/udev/rules.d under
    /// the configuration root.
    public var rulesDirectory: String?
    /// The largest file read (modprobe.d and udev files are small; a bigger one is a problem).
    static let fileLimit = 1 << 20

    /// A reader of the host under `configRoot`.
    public init(configRoot: String = "/") { self.configRoot = configRoot }

    /// `relative` under the configuration root.
    func path(_ relative: String) -> String {
        (configRoot.hasSuffix("/") ? configRoot : configRoot + "/") + relative
    }

    /// Everything declared, in a fixed order (command line, modprobe.d, driverctl, udev,
    /// initramfs lists, vfioctl's early files).
    public func read() -> BootBindingDeclarations {
        var result = BootBindingDeclarations()
        let cmdline = procRoot + "/cmdline"
        switch Self.readText(cmdline) {
        case .success(let text): result.merge(BootBindingParser.kernelCommandLine(text, file: cmdline))
        case .failure(let problem): result.problems.append(problem)
        }
        // modprobe reads each file name once, the first directory in this order winning.
        for (file, _) in Self.firstByName(["etc/modprobe.d", "run/modprobe.d", "usr/lib/modprobe.d", "lib/modprobe.d"].map(path), suffix: ".conf", into: &result) {
            switch Self.readText(file) {
            case .success(let text): result.merge(BootBindingParser.modprobeConfiguration(text, file: file))
            case .failure(let problem): result.problems.append(problem)
            }
        }
        for (file, name) in Self.firstByName([path("etc/driverctl.d")], suffix: "", into: &result) {
            switch Self.readText(file) {
            case .success(let text): result.merge(BootBindingParser.driverctlOverride(fileName: name, contents: text, file: file))
            case .failure(let problem): result.problems.append(problem)
            }
        }
        let udevDirectories = [rulesDirectory ?? path("etc/udev/rules.d")] + ["etc/udev/rules.d", "run/udev/rules.d", "usr/lib/udev/rules.d", "lib/udev/rules.d"].map(path)
        var seenDirectories: [String] = []
        let uniqueDirectories = udevDirectories.filter { directory in
            defer { seenDirectories.append(directory) }
            return !seenDirectories.contains(directory)
        }
        for (file, name) in Self.firstByName(uniqueDirectories, suffix: ".rules", into: &result) {
            switch Self.readText(file) {
            case .success(let text):
                let ours = name.hasPrefix("90-vfioctl-") && text.hasPrefix(UdevRules.marker)
                result.merge(BootBindingParser.udevRules(text, file: file, vfioctlRule: ours))
            case .failure(let problem): result.problems.append(problem)
            }
        }
        if case .success(let text) = Self.readText(path("etc/initramfs-tools/modules"), missingIsEmpty: true) {
            result.initramfsModules += BootBindingParser.initramfsToolsModules(text)
        }
        for (file, _) in Self.firstByName([path("etc/dracut.conf.d")], suffix: ".conf", into: &result) {
            if case .success(let text) = Self.readText(file) { result.initramfsModules += BootBindingParser.dracutDrivers(text) }
        }
        let store = EarlyBindingStore(configRoot: configRoot)
        let recordFile = store.absolute(EarlyBindingRecord.path)
        do {
            if let record = try store.record() {
                // The early files put vfio-pci in the initramfs and set each device's override there.
                result.initramfsModules.append("vfio_pci")
                result.sources += record.devices.map {
                    BootBindingSource(mechanism: .vfioctlEarly, driver: BindPlan.targetDriver, target: .address($0.address), location: SourceLocation(file: recordFile))
                }
            }
        } catch {
            result.problems.append(BootBindingProblem(location: SourceLocation(file: recordFile), message: "vfioctl's early-binding record cannot be read: \(error)"))
        }
        return result
    }

    /// The regular entries of `directories` ending in `suffix`, each name once (the first
    /// directory holding it wins, as modprobe and udev do), sorted by name. A directory that
    /// exists but cannot be listed is a problem.
    static func firstByName(_ directories: [String], suffix: String, into result: inout BootBindingDeclarations) -> [(path: String, name: String)] {
        var chosen: [String: String] = [:]
        for directory in directories {
            var status = stat()
            guard stat(directory, &status) == 0 else { continue }   // absent: nothing declared there
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else {
                result.problems.append(BootBindingProblem(location: SourceLocation(file: directory), message: "cannot list this directory: check that it is a directory root can read"))
                continue
            }
            for name in names where name.hasSuffix(suffix) && !name.hasPrefix(".") && chosen[name] == nil {
                chosen[name] = directory + "/" + name
            }
        }
        return chosen.keys.sorted().compactMap { name in chosen[name].map { ($0, name) } }
    }

    /// A whole text file: regular files only, opened without blocking (a FIFO is refused, not
    /// waited on), at most `fileLimit` bytes. A link to /dev/null (modprobe's and udev's way to
    /// mask a file) reads as empty.
    static func readText(_ path: String, missingIsEmpty: Bool = false) -> Result<String, BootBindingProblem> {
        let location = SourceLocation(file: path)
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT && missingIsEmpty { return .success("") }
            return .failure(BootBindingProblem(location: location, message: "cannot read: \(String(cString: strerror(code))); fix its permissions or remove it, since its settings are unknown"))
        }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            return .failure(BootBindingProblem(location: location, message: "cannot read: \(String(cString: strerror(errno)))"))
        }
        let kind = status.st_mode & S_IFMT
        if kind == S_IFCHR {
            var null = stat()
            if stat("/dev/null", &null) == 0 && null.st_rdev == status.st_rdev { return .success("") }   // masked
        }
        guard kind == S_IFREG else {
            return .failure(BootBindingProblem(location: location, message: "is not a regular file, so it was not read; replace it with a file (or a link to /dev/null to mask it)"))
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            // The buffer outlives the call and read writes at most its count.
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return .failure(BootBindingProblem(location: location, message: "cannot read: \(String(cString: strerror(errno)))"))
            }
            if count == 0 { break }
            bytes += chunk[..<count]
            if bytes.count > fileLimit {
                return .failure(BootBindingProblem(location: location, message: "is larger than \(fileLimit) bytes, far more than a configuration file holds; it was not read"))
            }
        }
        return .success(String(decoding: bytes, as: UTF8.self))
    }
}
