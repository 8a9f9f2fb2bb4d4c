#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI

/// A path could not be opened, read or written as the regular file it should be.
public struct SafeFileError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The path as the caller gave it.
    public let path: String
    /// Why, in words ("is a FIFO, not a regular file").
    public let reason: String

    /// An error about `path`.
    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    /// "PATH: REASON".
    public var description: String { "\(path): \(reason)" }
}

/// The one home for opening files vfioctl reads or writes as root, where anything may have been
/// planted in a file's place:
/// - every open is non-blocking and checked with fstat, so a FIFO or device node is refused at
///   once instead of blocking or being read;
/// - reads stop at a size limit;
/// - paths under a root (a sysfs tree, a configuration root) resolve beneath it (openat2
///   RESOLVE_BENEATH): a symlink that leaves the root is refused;
/// - writes replace only regular files (or create new ones), through a temporary file in the
///   same directory renamed over the old one, so readers see the old file or the new one and a
///   failure leaves nothing half-written.
public enum SafeFile {
    /// A file type in words, for messages ("a FIFO", "a directory").
    public static func kindName(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: "a regular file"
        case S_IFDIR: "a directory"
        case S_IFIFO: "a FIFO"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFLNK: "a symbolic link"
        case S_IFSOCK: "a socket"
        default: "a file of unknown type"
        }
    }

    static func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

    /// Checks that `descriptor` is a regular file; closes it and throws when it is not.
    static func requireRegular(_ descriptor: Int32, path: String) throws(SafeFileError) {
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            let reason = errnoText()
            close(descriptor)
            throw SafeFileError(path: path, reason: reason)
        }
        guard status.st_mode & S_IFMT == S_IFREG else {
            close(descriptor)
            throw SafeFileError(path: path, reason: "is \(kindName(status.st_mode)), not a regular file")
        }
    }

    static func openFailure(_ path: String, _ code: Int32) -> SafeFileError {
        switch code {
        case ELOOP: SafeFileError(path: path, reason: "is a symbolic link; vfioctl does not follow it here")
        case EXDEV: SafeFileError(path: path, reason: "resolves outside its root (a symbolic link leaves it); refused")
        case ENXIO: SafeFileError(path: path, reason: "is a FIFO or socket with nothing on the other end, not a regular file")
        default: SafeFileError(path: path, reason: errnoText(code))
        }
    }

    /// Opens `path` (O_RDONLY or O_WRONLY in `flags`) without blocking and returns the
    /// descriptor of a regular file; `followFinalLink: false` refuses a symlink as the last
    /// component. The caller closes the descriptor.
    public static func openRegular(_ path: String, flags: Int32 = O_RDONLY, followFinalLink: Bool = true) throws(SafeFileError) -> Int32 {
        let descriptor = open(path, flags | O_NONBLOCK | O_CLOEXEC | (followFinalLink ? 0 : O_NOFOLLOW))
        guard descriptor >= 0 else { throw openFailure(path, errno) }
        try requireRegular(descriptor, path: path)
        return descriptor
    }

    /// Opens `relative` under the directory `root`, never leaving it (symlinks that stay inside
    /// are followed, as sysfs's own are), without blocking, and returns the descriptor of a
    /// regular file. On kernels without openat2 the resolved path is compared with the root's.
    public static func openBeneath(root: String, relative: String, flags: Int32 = O_RDONLY) throws(SafeFileError) -> Int32 {
        let shown = root.hasSuffix("/") ? root + relative : root + "/" + relative
        var trimmed = Substring(relative)
        while trimmed.hasPrefix("/") { trimmed = trimmed.dropFirst() }
        let directory = open(root, CUAPI_O_PATH | O_DIRECTORY | O_CLOEXEC)
        guard directory >= 0 else { throw SafeFileError(path: root, reason: errnoText()) }
        defer { close(directory) }
        let openFlags = flags | O_NONBLOCK | O_CLOEXEC
        var descriptor = cuapi_openat2(directory, String(trimmed), UInt64(UInt32(bitPattern: openFlags)), 0,
                                       CUAPI_RESOLVE_BENEATH | CUAPI_RESOLVE_NO_MAGICLINKS)
        if descriptor < 0 && errno == ENOSYS {
            guard let resolvedRoot = realPath(root) else { throw SafeFileError(path: root, reason: errnoText()) }
            guard let resolved = realPath(shown) else { throw openFailure(shown, errno) }
            guard resolved == resolvedRoot || resolved.hasPrefix(resolvedRoot == "/" ? "/" : resolvedRoot + "/") else {
                throw openFailure(shown, EXDEV)
            }
            descriptor = open(resolved, openFlags | O_NOFOLLOW)
        }
        guard descriptor >= 0 else { throw openFailure(shown, errno) }
        try requireRegular(descriptor, path: shown)
        return descriptor
    }

    /// The canonical absolute path (links resolved), nil when it cannot be resolved.
    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Reads everything from `descriptor`, failing past `limit` bytes.
    public static func readAll(_ descriptor: Int32, path: String, limit: Int) throws(SafeFileError) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { buffer in
                // Safety: reads into `chunk`'s own storage, at most its size.
                Glibc.read(descriptor, buffer.baseAddress, buffer.count)
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw SafeFileError(path: path, reason: errnoText())
            }
            if count == 0 { return bytes }
            guard bytes.count + count <= limit else {
                throw SafeFileError(path: path, reason: "is larger than \(limit) bytes, more than vfioctl reads from it")
            }
            bytes += chunk[..<count]
        }
    }

    /// Reads a whole regular file of at most `limit` bytes (see `openRegular`).
    public static func read(_ path: String, limit: Int, followFinalLink: Bool = true) throws(SafeFileError) -> [UInt8] {
        let descriptor = try openRegular(path, flags: O_RDONLY, followFinalLink: followFinalLink)
        defer { close(descriptor) }
        return try readAll(descriptor, path: path, limit: limit)
    }

    /// Reads a whole regular file of at most `limit` bytes under `root` (see `openBeneath`).
    public static func readBeneath(root: String, relative: String, limit: Int) throws(SafeFileError) -> [UInt8] {
        let descriptor = try openBeneath(root: root, relative: relative, flags: O_RDONLY)
        defer { close(descriptor) }
        let shown = root.hasSuffix("/") ? root + relative : root + "/" + relative
        return try readAll(descriptor, path: shown, limit: limit)
    }

    /// Whether both paths name the same existing directory (same device and inode), so that a
    /// bind mount or a symlink to /sys counts as the live /sys.
    public static func isSameDirectory(_ first: String, _ second: String) -> Bool {
        var a = stat(), b = stat()
        guard stat(first, &a) == 0, stat(second, &b) == 0 else { return false }
        return a.st_mode & S_IFMT == S_IFDIR && a.st_dev == b.st_dev && a.st_ino == b.st_ino
    }

    /// A small text file's contents, trimmed of surrounding whitespace; nil when it is missing,
    /// not a regular file (a FIFO would block), larger than `limit` or empty after trimming.
    public static func readTrimmedText(_ path: String, limit: Int = 4096) -> String? {
        guard let bytes = try? read(path, limit: limit) else { return nil }
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x0A || $0 == 0x09 || $0 == 0x0D }
        var end = bytes.count
        while end > 0, isSpace(bytes[end - 1]) { end -= 1 }
        var start = 0
        while start < end, isSpace(bytes[start]) { start += 1 }
        return start < end ? String(decoding: bytes[start..<end], as: UTF8.self) : nil
    }

    /// Opens a file vfioctl keeps for itself at `path` (the binding journal, the lock) with
    /// `flags` (O_WRONLY or O_RDWR, and O_CREAT, O_APPEND or O_TRUNC as wanted), creating it with
    /// `mode`: never through a symlink, never blocking, and only when what is there is a regular
    /// file (or nothing, for O_CREAT). Checked before the open, since opening a device node can
    /// act on the device, and after it (fstat). The caller closes the descriptor.
    public static func openOwnFile(_ path: String, flags: Int32, mode: mode_t = 0o600) throws(SafeFileError) -> Int32 {
        var status = stat()
        if lstat(path, &status) == 0 {
            guard status.st_mode & S_IFMT == S_IFREG else {
                throw SafeFileError(path: path, reason: "is \(kindName(status.st_mode)), not a regular file; vfioctl leaves it alone (move it away)")
            }
        } else if errno != ENOENT {
            throw SafeFileError(path: path, reason: errnoText())
        }
        let descriptor = open(path, flags | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW, mode)
        guard descriptor >= 0 else { throw openFailure(path, errno) }
        try requireRegular(descriptor, path: path)
        return descriptor
    }

    /// Whether `path` names nothing (lstat: a dangling symlink is something).
    public static func isAbsent(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) != 0 && errno == ENOENT
    }

    /// Writes `bytes` to `path` as a new regular file that replaces the old one atomically. The
    /// path must name nothing or a regular file: a symlink, device node, FIFO or directory is
    /// refused, never replaced or written through. The directory must exist.
    public static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws(SafeFileError) {
        let (directoryPath, name) = split(path)
        let directory = open(directoryPath, CUAPI_O_PATH | O_DIRECTORY | O_CLOEXEC)
        guard directory >= 0 else { throw SafeFileError(path: path, reason: "its directory: \(errnoText())") }
        defer { close(directory) }
        try writeAtomically(bytes, directory: directory, name: name, shown: path, mode: mode)
    }

    /// `writeAtomically` for `relative` under `root`: missing directories are created (0755) and
    /// no component may be a symlink, so nothing is written outside the root.
    public static func writeAtomically(_ bytes: [UInt8], root: String, relative: String, mode: mode_t = 0o644) throws(SafeFileError) {
        let shown = root.hasSuffix("/") ? root + relative : root + "/" + relative
        let (directoryPath, name) = split(relative)
        let directory = try openDirectory(root: root, relative: directoryPath, create: true, shown: shown)
        defer { close(directory) }
        try writeAtomically(bytes, directory: directory, name: name, shown: shown, mode: mode)
    }

    /// Deletes the regular file `relative` under `root` (no symlinked component); false when
    /// there was none. Anything but a regular file is refused.
    @discardableResult
    public static func removeBeneath(root: String, relative: String) throws(SafeFileError) -> Bool {
        let shown = root.hasSuffix("/") ? root + relative : root + "/" + relative
        let (directoryPath, name) = split(relative)
        let directory: Int32
        do { directory = try openDirectory(root: root, relative: directoryPath, create: false, shown: shown) } catch {
            if SafeFile.isAbsent(root + "/" + directoryPath) { return false }
            throw error
        }
        defer { close(directory) }
        var status = stat()
        if fstatat(directory, name, &status, AT_SYMLINK_NOFOLLOW) != 0 {
            if errno == ENOENT { return false }
            throw SafeFileError(path: shown, reason: errnoText())
        }
        guard status.st_mode & S_IFMT == S_IFREG else {
            throw SafeFileError(path: shown, reason: "is \(kindName(status.st_mode)), not a regular file vfioctl wrote; left alone")
        }
        guard unlinkat(directory, name, 0) == 0 else { throw SafeFileError(path: shown, reason: errnoText()) }
        return true
    }

    /// Reads `relative` under `root` with no symlinked component at all (files vfioctl itself
    /// writes there); nil when it does not exist.
    public static func readOwnFile(root: String, relative: String, limit: Int) throws(SafeFileError) -> [UInt8]? {
        let shown = root.hasSuffix("/") ? root + relative : root + "/" + relative
        let (directoryPath, name) = split(relative)
        let directory: Int32
        do { directory = try openDirectory(root: root, relative: directoryPath, create: false, shown: shown) } catch {
            if SafeFile.isAbsent(root + "/" + directoryPath) { return nil }
            throw error
        }
        defer { close(directory) }
        let descriptor = openat(directory, name, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else {
            if errno == ENOENT { return nil }
            throw openFailure(shown, errno)
        }
        try requireRegular(descriptor, path: shown)
        defer { close(descriptor) }
        return try readAll(descriptor, path: shown, limit: limit)
    }

    static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    /// Opens (creating with `create`) the directory `relative` under `root`, one component at a
    /// time, none of them a symlink.
    static func openDirectory(root: String, relative: String, create: Bool, shown: String) throws(SafeFileError) -> Int32 {
        var directory = open(root, CUAPI_O_PATH | O_DIRECTORY | O_CLOEXEC)
        guard directory >= 0 else { throw SafeFileError(path: root, reason: errnoText()) }
        for component in relative.split(separator: "/") where component != "." {
            let name = String(component)
            guard name != ".." else {
                close(directory)
                throw SafeFileError(path: shown, reason: "names \"..\"; refused")
            }
            if create && mkdirat(directory, name, 0o755) != 0 && errno != EEXIST {
                let reason = errnoText()
                close(directory)
                throw SafeFileError(path: shown, reason: "cannot create directory \(name): \(reason)")
            }
            let next = openat(directory, name, CUAPI_O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            let code = errno
            close(directory)
            guard next >= 0 else {
                throw SafeFileError(path: shown, reason: code == ELOOP || code == ENOTDIR
                    ? "its directory \(name) is a symbolic link or not a directory; vfioctl writes only in real directories under \(root)"
                    : "directory \(name): \(errnoText(code))")
            }
            directory = next
        }
        return directory
    }

    static func writeAtomically(_ bytes: [UInt8], directory: Int32, name: String, shown: String, mode: mode_t) throws(SafeFileError) {
        guard !name.isEmpty, name != ".", name != ".." else { throw SafeFileError(path: shown, reason: "is not a file name") }
        var status = stat()
        if fstatat(directory, name, &status, AT_SYMLINK_NOFOLLOW) == 0 {
            guard status.st_mode & S_IFMT == S_IFREG else {
                throw SafeFileError(path: shown, reason: "is \(kindName(status.st_mode)); vfioctl replaces only regular files")
            }
        } else if errno != ENOENT {
            throw SafeFileError(path: shown, reason: errnoText())
        }
        var temporary = ""
        var descriptor: Int32 = -1
        for _ in 0..<16 {
            temporary = ".\(name).vfioctl-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            descriptor = openat(directory, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            if descriptor >= 0 || errno != EEXIST { break }
        }
        guard descriptor >= 0 else { throw SafeFileError(path: shown, reason: "cannot create a temporary file beside it: \(errnoText())") }
        var failure: String?
        var offset = 0
        while offset < bytes.count && failure == nil {
            let written = bytes.withUnsafeBytes { buffer in
                // Safety: writes from `bytes`' own storage, within its bounds.
                write(descriptor, buffer.baseAddress.map { $0 + offset }, buffer.count - offset)
            }
            if written < 0 {
                if errno != EINTR { failure = errnoText() }
            } else {
                offset += written
            }
        }
        if failure == nil && fchmod(descriptor, mode) != 0 { failure = errnoText() }
        if failure == nil && fsync(descriptor) != 0 { failure = errnoText() }
        if close(descriptor) != 0 && failure == nil { failure = errnoText() }
        if failure == nil && renameat(directory, temporary, directory, name) != 0 { failure = errnoText() }
        if let failure {
            unlinkat(directory, temporary, 0)
            throw SafeFileError(path: shown, reason: failure)
        }
    }
}
