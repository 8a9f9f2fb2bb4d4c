import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PCIInventory
import SystemCalls

/// Writes and removes the early-binding files under a configuration root ("/" on the host) and
/// keeps the record. Thin: the contents come from `EarlyBindingPlan`.
public struct EarlyBindingStore {
    /// The root the files are written under ("/" on the host; a scratch root in tests).
    public let configRoot: String

    /// A store writing under `configRoot`.
    public init(configRoot: String = "/") { self.configRoot = configRoot }

    /// A path relative to the configuration root, made absolute under it.
    public func absolute(_ relative: String) -> String {
        (configRoot.hasSuffix("/") ? configRoot : configRoot + "/") + relative
    }

    /// The record, nil when there is none.
    public func record() throws(BindingError) -> EarlyBindingRecord? {
        guard let bytes = try ownFile(EarlyBindingRecord.path) else { return nil }
        switch EarlyBindingRecord.decode(String(decoding: bytes, as: UTF8.self)) {
        case .success(let record): return record
        case .failure(let error): throw error
        }
    }

    /// The file `relative` under the root, read as a regular file with no symlink on the way
    /// (SafeFile); nil when there is none; throws when something else is in its place.
    func ownFile(_ relative: String) throws(BindingError) -> [UInt8]? {
        do { return try SafeFile.readOwnFile(root: configRoot, relative: relative, limit: 1 << 20) } catch {
            throw .untrustedSysfs(path: absolute(relative), reason: "\(error.reason); vfioctl leaves it alone: move it away")
        }
    }

    /// Files of ours (by their marker) at the paths a plan writes that the record does not
    /// account for, when one of them names `address`: what a change that failed or was killed
    /// half-way left (files that name no device, as the initramfs hook, go with them). Relative
    /// paths; empty when none names the device.
    public func unrecordedFiles(naming address: PCIAddress, record: EarlyBindingRecord?) -> [String] {
        let recorded = record.map { $0.devices.contains { $0.address == address } } ?? false
        var unaccounted: [String] = []
        var namesIt = false
        for path in EarlyBindingPlan.knownPaths.sorted() {
            guard let bytes = (try? ownFile(path)) ?? nil, EarlyBindingPlan.isOurs(bytes) else { continue }
            let names = EarlyBindingPlan.addresses(in: bytes).contains(address)
            let listed = record?.files.contains(path) ?? false
            if !listed || (names && !recorded) {
                unaccounted.append(path)
                namesIt = namesIt || names
            }
        }
        return namesIt ? unaccounted : []
    }

    /// The host's initramfs tool: `update-initramfs` or `dracut` under the root.
    public func detectTool() -> InitramfsTool? {
        let has = { (names: [String]) in names.contains { access(absolute($0), X_OK) == 0 } }
        return InitramfsTool.detect(hasUpdateInitramfs: has(["usr/sbin/update-initramfs", "sbin/update-initramfs"]),
                                    hasDracut: has(["usr/bin/dracut", "usr/sbin/dracut", "sbin/dracut"]))
    }

    /// Scripts the initramfs tool runs get mode 0755, the rest 0644.
    static func mode(of path: String) -> mode_t {
        [EarlyBindingPlan.initramfsToolsHook, EarlyBindingPlan.initramfsToolsScript, EarlyBindingPlan.dracutSetup,
         EarlyBindingPlan.dracutHook].contains(path) ? 0o755 : 0o644
    }

    /// Makes the files say `devices` (none: removes them all and the record). All or nothing:
    /// every file is checked before any is written (a file of the same name without our marker
    /// is someone else's, and anything but a regular file is refused), and when a write fails
    /// every file already changed gets its old contents back (or is removed), the record
    /// included. Every path resolves under the root with no symlink (SafeFile).
    public func apply(_ devices: [EarlyDevice], tool: InitramfsTool) throws(BindingError) -> [String] {
        let previous = try record()
        let files = EarlyBindingPlan.files(for: devices, tool: tool)
        let wanted = Set(files.map(\.path))
        let stale = Set(previous?.files ?? []).subtracting(wanted)
        var before: [String: [UInt8]] = [:]
        for path in wanted.union(stale).sorted() {
            guard let bytes = try ownFile(path) else { continue }
            guard EarlyBindingPlan.isOurs(bytes) else {
                throw .sysfsWrite(path: absolute(path), value: "(early binding)", reason: "the file exists and is not vfioctl's; move it away or merge it by hand")
            }
            before[path] = bytes
        }
        if let bytes = try ownFile(EarlyBindingRecord.path) { before[EarlyBindingRecord.path] = bytes }
        var touched: [String] = []
        // The root itself may be new (a scratch root); everything below it is made under it.
        if !files.isEmpty && SafeFile.isAbsent(configRoot) {
            do { try FileManager.default.createDirectory(atPath: configRoot, withIntermediateDirectories: true) } catch {
                throw .sysfsWrite(path: configRoot, value: "(early binding)", reason: "cannot create the configuration root: \((error as NSError).localizedFailureReason ?? error.localizedDescription)")
            }
        }
        do throws(SafeFileError) {
            for file in files {
                touched.append(file.path)
                try SafeFile.writeAtomically(Array(file.contents.utf8), root: configRoot, relative: file.path, mode: Self.mode(of: file.path))
            }
            for path in stale.sorted() {
                touched.append(path)
                try SafeFile.removeBeneath(root: configRoot, relative: path)
            }
            touched.append(EarlyBindingRecord.path)
            if devices.isEmpty {
                try SafeFile.removeBeneath(root: configRoot, relative: EarlyBindingRecord.path)
            } else {
                let record = EarlyBindingRecord(tool: tool, devices: devices, files: files.map(\.path))
                try SafeFile.writeAtomically(Array(record.encoded().utf8), root: configRoot, relative: EarlyBindingRecord.path, mode: 0o644)
            }
        } catch {
            var left: [String] = []
            for path in touched.reversed() {
                do throws(SafeFileError) {
                    if let old = before[path] {
                        try SafeFile.writeAtomically(old, root: configRoot, relative: path, mode: Self.mode(of: path))
                    } else {
                        try SafeFile.removeBeneath(root: configRoot, relative: path)
                    }
                } catch { left.append(absolute(path)) }
            }
            let undone = left.isEmpty ? "every file is as it was before" : "these could not be put back: \(left.joined(separator: ", "))"
            throw .sysfsWrite(path: error.path, value: "(early binding)", reason: "\(error.reason); \(undone)")
        }
        return files.map { absolute($0.path) }
    }

    /// Deletes files of ours that no record lists (`unrecordedFiles`); the paths deleted.
    public func removeUnrecorded(_ relative: [String]) throws(BindingError) -> [String] {
        var removed: [String] = []
        for path in relative {
            do { if try SafeFile.removeBeneath(root: configRoot, relative: path) { removed.append(absolute(path)) } } catch {
                throw .sysfsWrite(path: absolute(path), value: "(delete)", reason: error.reason)
            }
        }
        return removed
    }

    /// Whether the files on disk are exactly what the plan writes for the record.
    public func filesAreCurrent(_ record: EarlyBindingRecord) -> Bool {
        EarlyBindingPlan.files(for: record.devices, tool: record.tool).allSatisfy { file in
            ((try? ownFile(file.path)) ?? nil).map { String(decoding: $0, as: UTF8.self) } == file.contents
        }
    }

    /// Runs the tool's regenerate command; its exit status (-1: not started).
    public func regenerate(_ tool: InitramfsTool) -> Int32 {
        let command = tool.regenerateCommand
        guard let program = findProgram(["/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"].map { $0 + command[0] }) else { return -1 }
        return runProgram(program, Array(command.dropFirst()), quiet: false)
    }
}
