#if canImport(Glibc)
import Glibc
private let posixWrite = Glibc.write
private let posixSymlink = Glibc.symlink
private let posixClose = Glibc.close
#elseif canImport(Musl)
import Musl
private let posixWrite = Musl.write
private let posixSymlink = Musl.symlink
private let posixClose = Musl.close
#elseif canImport(Darwin)
import Darwin
private let posixWrite = Darwin.write
private let posixSymlink = Darwin.symlink
private let posixClose = Darwin.close
#endif
import SystemCalls

/// Thin POSIX file writer: the large fixtures create tens of thousands of entries,
/// so this avoids Foundation's per-file overhead. Paths are component arrays relative to `rootPath`.
struct TreeWriter {
    let rootPath: String

    func path(_ components: [String]) -> String {
        components.isEmpty ? rootPath : rootPath + "/" + components.joined(separator: "/")
    }

    func makeDirectory(_ components: [String]) throws {
        let fullPath = path(components)
        if mkdir(fullPath, 0o755) != 0 && errno != EEXIST {
            throw FixtureError.fileSystem(path: fullPath, operation: "mkdir", errno: errno)
        }
    }

    /// Creates every missing directory along `components`.
    func makeDirectories(_ components: [String]) throws {
        for depth in 1...max(components.count, 1) where depth <= components.count {
            try makeDirectory(Array(components.prefix(depth)))
        }
    }

    func write(_ components: [String], _ text: String, mode: mode_t = 0o444) throws {
        var text = text
        try text.withUTF8 { buffer in
            try write(path(components), buffer: UnsafeRawBufferPointer(buffer), mode: mode)
        }
    }

    func write(_ components: [String], bytes: [UInt8], mode: mode_t = 0o644) throws {
        try bytes.withUnsafeBytes { buffer in
            try write(path(components), buffer: buffer, mode: mode)
        }
    }

    private func write(_ fullPath: String, buffer: UnsafeRawBufferPointer, mode: mode_t) throws {
        let descriptor = open(fullPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard descriptor >= 0 else { throw FixtureError.fileSystem(path: fullPath, operation: "open", errno: errno) }
        try writeAll(buffer, to: descriptor, displayPath: fullPath)
    }

    /// Opens a directory so many entries can be created in it without re-resolving its path.
    func openDirectory(_ components: [String]) throws -> OpenDirectory {
        let fullPath = path(components)
        let descriptor = open(fullPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw FixtureError.fileSystem(path: fullPath, operation: "open", errno: errno) }
        return OpenDirectory(descriptor: descriptor, components: components, displayPath: fullPath)
    }

    func symlink(_ components: [String], target: String) throws {
        let fullPath = path(components)
        if posixSymlink(target, fullPath) != 0 {
            throw FixtureError.fileSystem(path: fullPath, operation: "symlink", errno: errno)
        }
    }

    /// Symlink at `components` pointing at `targetComponents`, spelled relatively as sysfs does.
    func relativeSymlink(_ components: [String], to targetComponents: [String]) throws {
        try symlink(components, target: relativePath(fromDirectory: Array(components.dropLast()), to: targetComponents))
    }

    func removeFile(_ components: [String]) throws {
        let fullPath = path(components)
        if unlink(fullPath) != 0 && errno != ENOENT {
            throw FixtureError.fileSystem(path: fullPath, operation: "unlink", errno: errno)
        }
    }

    func truncateFile(_ components: [String], to length: Int) throws {
        let fullPath = path(components)
        if truncate(fullPath, off_t(length)) != 0 {
            throw FixtureError.fileSystem(path: fullPath, operation: "truncate", errno: errno)
        }
    }
}

/// Writes the whole buffer, then closes the descriptor.
private func writeAll(_ buffer: UnsafeRawBufferPointer, to descriptor: Int32, displayPath: String) throws {
    defer { _ = posixClose(descriptor) }
    var written = 0
    while written < buffer.count {
        guard let base = buffer.baseAddress else { break }
        let result = try SystemCall.value({ posixWrite(descriptor, base + written, buffer.count - written) }) {
            FixtureError.fileSystem(path: displayPath, operation: "write", errno: $0.rawValue)
        }
        written += result
    }
}

/// An open directory: entries are created with `openat` / `symlinkat` relative to it.
struct OpenDirectory: ~Copyable {
    let descriptor: Int32
    /// The directory's components relative to the tree root, for relative symlink targets.
    let components: [String]
    let displayPath: String

    deinit { _ = posixClose(descriptor) }

    func write(_ name: String, _ text: String, mode: mode_t = 0o444) throws {
        var text = text
        try text.withUTF8 { try write(name, buffer: UnsafeRawBufferPointer($0), mode: mode) }
    }

    func write(_ name: String, bytes: [UInt8], mode: mode_t = 0o644) throws {
        try bytes.withUnsafeBytes { try write(name, buffer: $0, mode: mode) }
    }

    private func write(_ name: String, buffer: UnsafeRawBufferPointer, mode: mode_t) throws {
        let file = openat(descriptor, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard file >= 0 else { throw FixtureError.fileSystem(path: displayPath + "/" + name, operation: "open", errno: errno) }
        try writeAll(buffer, to: file, displayPath: displayPath + "/" + name)
    }

    /// Symlink `name` in this directory pointing at `target` (relative to the tree root), spelled relatively.
    func relativeSymlink(_ name: String, to target: [String]) throws {
        if symlinkat(relativePath(fromDirectory: components, to: target), descriptor, name) != 0 {
            throw FixtureError.fileSystem(path: displayPath + "/" + name, operation: "symlink", errno: errno)
        }
    }
}

/// `../../x/y` from one directory to a target, both relative to the same root.
func relativePath(fromDirectory directory: [String], to target: [String]) -> String {
    var common = 0
    while common < directory.count && common < target.count && directory[common] == target[common] {
        common += 1
    }
    let ups = Array(repeating: "..", count: directory.count - common)
    return (ups + target[common...]).joined(separator: "/")
}
