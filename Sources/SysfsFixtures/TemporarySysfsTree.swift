import Foundation

/// A fixture tree built in a fresh temporary directory; `remove()` deletes it.
public struct TemporarySysfsTree: Sendable {
    /// The sysfs root: pass it where `/sys` would go (e.g. `vfioctl --sysfs-root`).
    public let rootPath: String
    public let host: FixtureHost

    /// `ROOT/bus/pci`: the directory `lspci -O sysfs.path=` expects.
    public var pciBusPath: String { rootPath + "/bus/pci" }
    public var rootURL: URL { URL(fileURLWithPath: rootPath, isDirectory: true) }

    /// Builds `host` under a new directory in `parentDirectory` (default: the system temp directory).
    public static func create(
        _ host: FixtureHost,
        in parentDirectory: String = NSTemporaryDirectory(),
        prefix: String = "vfioctl-sysfs"
    ) throws -> TemporarySysfsTree {
        let directory = parentDirectory.hasSuffix("/") ? parentDirectory : parentDirectory + "/"
        var template = (directory + prefix + "-XXXXXX").utf8CString
        let created = template.withUnsafeMutableBufferPointer { buffer -> Bool in
            guard let base = buffer.baseAddress else { return false }
            return mkdtemp(base) != nil
        }
        guard created else {
            throw FixtureError.fileSystem(path: parentDirectory, operation: "mkdtemp", errno: errno)
        }
        let rootPath = template.withUnsafeBufferPointer { buffer in
            buffer.baseAddress.map { String(cString: $0) } ?? ""
        }
        let tree = TemporarySysfsTree(rootPath: rootPath, host: host)
        do {
            try FixtureBuilder.build(host, at: rootPath)
        } catch {
            try? tree.remove()
            throw error
        }
        return tree
    }

    public func remove() throws {
        try FileManager.default.removeItem(atPath: rootPath)
    }
}

/// Builds `host` in a temporary directory, runs `body` with it, and removes it afterwards.
public func withTemporarySysfsTree<Result>(
    _ host: FixtureHost,
    _ body: (TemporarySysfsTree) throws -> Result
) throws -> Result {
    let tree = try TemporarySysfsTree.create(host)
    defer { try? tree.remove() }
    return try body(tree)
}

/// Async variant of `withTemporarySysfsTree(_:_:)`.
public func withTemporarySysfsTree<Result>(
    _ host: FixtureHost,
    _ body: (TemporarySysfsTree) async throws -> Result
) async throws -> Result {
    let tree = try TemporarySysfsTree.create(host)
    defer { try? tree.remove() }
    return try await body(tree)
}
