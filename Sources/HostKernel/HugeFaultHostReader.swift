import CLinuxUAPI
import SystemCalls

/// Reads the `HugeFaultHost` of the running system, or of a copied tree: the kernel release
/// (`<proc>/sys/kernel/osrelease`), the THP mode (`<sysfs>/kernel/mm/transparent_hugepage/enabled`)
/// and, for this process on the live system only, prctl(PR_GET_THP_DISABLE).
public struct HugeFaultHostReader: Sendable {
    /// Where sysfs is read from: `/sys`, or the root of a copied tree.
    public var sysfsRoot: String
    /// Where procfs is read from: `/proc`, or the root of a copied tree.
    public var procRoot: String

    /// A reader of the given roots (by default the live system's); reads nothing until `read`.
    public init(sysfsRoot: String = "/sys", procRoot: String = "/proc") {
        self.sysfsRoot = sysfsRoot
        self.procRoot = procRoot
    }

    /// Why `read` could not tell the host's facts.
    public enum ReadError: Error, CustomStringConvertible {
        case kernelReleaseUnreadable(path: String)
        case modeUnparsable(path: String, text: String)

        /// Names the file and what is wrong with its contents.
        public var description: String {
            switch self {
            case let .kernelReleaseUnreadable(path):
                return "cannot tell the kernel version: \(path) is missing or not a release such as 6.12.95"
            case let .modeUnparsable(path, text):
                return "\(path) says \"\(text)\", which names no THP mode in brackets (always, madvise or never)"
            }
        }
    }

    /// The host's facts; `processSetting` nil reads this process's prctl state where the roots
    /// are the live ones (and assumes `inherited` for a copied tree).
    public func read(processSetting: ProcessTHPSetting? = nil) throws(ReadError) -> HugeFaultHost {
        let releasePath = procRoot + "/sys/kernel/osrelease"
        guard let release = Self.readText(releasePath), let kernel = KernelVersion(release: release) else {
            throw .kernelReleaseUnreadable(path: releasePath)
        }
        let modePath = sysfsRoot + "/kernel/mm/transparent_hugepage/enabled"
        var mode: TransparentHugePageMode?
        if let text = Self.readText(modePath) {
            guard let parsed = TransparentHugePageMode(sysfsText: text) else { throw .modeUnparsable(path: modePath, text: text) }
            mode = parsed
        }
        let live = isLive
        let process = processSetting ?? (live ? Self.currentProcessSetting() : .inherited)
        // On the live system a missing file means a kernel without THP; a copied tree may
        // simply not have copied it.
        return HugeFaultHost(kernel: kernel, mode: mode, modeKnown: live, process: process)
    }

    var isLive: Bool { SafeFile.isSameDirectory(sysfsRoot, "/sys") && SafeFile.isSameDirectory(procRoot, "/proc") }

    /// This process's PR_GET_THP_DISABLE state.
    public static func currentProcessSetting() -> ProcessTHPSetting {
        let result = cuapi_get_thp_disable()
        return result < 0 ? .inherited : ProcessTHPSetting(prctlResult: result)
    }

    /// A file's text, trimmed; nil when missing, not a regular file (a FIFO would block) or empty.
    static func readText(_ path: String) -> String? {
        SafeFile.readTrimmedText(path)
    }
}
