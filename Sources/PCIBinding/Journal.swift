import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PCIInventory
import SystemCalls

/// The record of every device vfioctl has taken from its driver, written before anything changes
/// so that an interrupted run can be undone by `vfioctl restore`.
///
/// One JSON object per line, appended and flushed to disk (fdatasync) before the sysfs writes it
/// protects; the last line for an address wins, and a `removed` line drops it. A group of any
/// size is journalled with one append before its first change and one after its last, so a
/// bind costs O(devices), never the whole file per step. A torn last line (a crash mid-append)
/// is ignored: the change it was to protect never started. The file is compacted (rewritten
/// atomically) when dead lines dominate, and deleted when no entry is left. Appends happen under
/// the `BindingLock`; reads may happen without it.
public final class BindingJournal: @unchecked Sendable {
    /// Where a device's binding change stands.
    public enum State: String, Codable, Sendable {
        /// A bind was started and may be anywhere between its first and last step.
        case binding
        /// The device is on vfio-pci; the entry remembers what to return it to.
        case bound
        /// A return to the original driver was started.
        case unbinding
        /// `vfioctl rebar` resized a BAR of a device no driver held; the entry remembers the
        /// sizes to put back (`unbind`, `restore --all`).
        case resized

        /// Whether the change is complete (kept by a plain `restore`, returned by `--all`).
        public var isComplete: Bool { self == .bound || self == .resized }
    }

    /// A BAR vfioctl resized: the size it had before and the size vfioctl gave it, so that a
    /// return can put it back and tell when the device no longer matches the record.
    public struct BARSize: Sendable, Equatable, Codable {
        /// The BAR's index (0-5).
        public var bar: Int
        /// Its size before vfioctl's first resize, in bytes.
        public var original: UInt64
        /// The size vfioctl gave it, in bytes.
        public var resized: UInt64

        /// A record as given.
        public init(bar: Int, original: UInt64, resized: UInt64) {
            self.bar = bar
            self.original = original
            self.resized = resized
        }

        /// Why the record cannot be what vfioctl wrote; nil when it can.
        var problem: String? {
            guard (0..<6).contains(bar) else { return "BAR index \(bar) is not 0-5" }
            for size in [original, resized] where ResizableBARSize.code(bytes: size) == nil {
                return "BAR \(bar) size \(size) is not a power of two of at least 1 MiB"
            }
            return nil
        }
    }

    /// One device's journal entry: what to give it back to.
    public struct Entry: Sendable, Equatable {
        /// The device.
        public var address: PCIAddress
        /// The driver the device had before vfioctl touched it; nil when it had none.
        public var originalDriver: String?
        /// driver_override before vfioctl touched it; nil when unset.
        public var originalOverride: String?
        /// The device at `address` when it was journalled; nil when sysfs did not say.
        public var identity: DeviceIdentity?
        /// Where its change stands.
        public var state: State
        /// When the entry was last written.
        public var updated: Date
        /// Who the device's VFIO nodes were given to (`bind --owner`); nil: root, the kernel's owner.
        /// `unbind` and `restore` give them back to root.
        public var nodeOwner: NodeOwner?
        /// The BARs vfioctl resized, to be put back before the original driver binds.
        public var barSizes: [BARSize]

        /// An entry as given.
        public init(address: PCIAddress, originalDriver: String?, originalOverride: String?,
                    identity: DeviceIdentity?, state: State, updated: Date = Date(), nodeOwner: NodeOwner? = nil,
                    barSizes: [BARSize] = []) {
            self.address = address
            self.originalDriver = originalDriver
            self.originalOverride = originalOverride
            self.identity = identity
            self.state = state
            self.updated = updated
            self.nodeOwner = nodeOwner
            self.barSizes = barSizes
        }

        /// `barSizes` with `bar` recorded as resized to `size`: the first original is kept, and
        /// a BAR back at its original size is dropped.
        public func recordingResize(bar: Int, from current: UInt64, to size: UInt64) -> [BARSize] {
            var sizes = barSizes.filter { $0.bar != bar }
            let original = barSizes.first { $0.bar == bar }?.original ?? current
            if original != size { sizes.append(BARSize(bar: bar, original: original, resized: size)) }
            return sizes.sorted { $0.bar < $1.bar }
        }
    }

    /// One line of the file.
    struct Line: Codable {
        var address: String
        /// A `State`, or "removed".
        var state: String
        var originalDriver: String?
        var originalOverride: String?
        var identity: DeviceIdentity?
        var updated: Date
        var nodeOwner: NodeOwner?
        /// Absent in journals of vfioctl before Resizable BAR support: no BAR was resized.
        var barSizes: [BARSize]? = nil

        enum CodingKeys: String, CodingKey {
            case address, state, identity, updated
            case originalDriver = "original_driver"
            case originalOverride = "original_override"
            case nodeOwner = "node_owner"
            case barSizes = "bar_sizes"
        }

        init(address: String, state: String, originalDriver: String? = nil, originalOverride: String? = nil,
             identity: DeviceIdentity? = nil, updated: Date, nodeOwner: NodeOwner? = nil, barSizes: [BARSize]? = nil) {
            self.address = address
            self.state = state
            self.originalDriver = originalDriver
            self.originalOverride = originalOverride
            self.identity = identity
            self.updated = updated
            self.nodeOwner = nodeOwner
            self.barSizes = barSizes
        }

        init(_ entry: Entry) {
            self.init(address: entry.address.description, state: entry.state.rawValue, originalDriver: entry.originalDriver,
                      originalOverride: entry.originalOverride, identity: entry.identity, updated: entry.updated,
                      nodeOwner: entry.nodeOwner, barSizes: entry.barSizes)
        }

        /// "No driver" is a fact worth recording: written as null, not left out.
        func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(address, forKey: .address)
            try container.encode(state, forKey: .state)
            try container.encode(originalDriver, forKey: .originalDriver)
            try container.encode(originalOverride, forKey: .originalOverride)
            try container.encode(identity, forKey: .identity)
            try container.encode(updated, forKey: .updated)
            // Only where set: a journal without owners reads as before.
            try container.encodeIfPresent(nodeOwner, forKey: .nodeOwner)
            // Left out when no BAR was resized, so such lines read the same in older vfioctl.
            if let barSizes, !barSizes.isEmpty { try container.encode(barSizes, forKey: .barSizes) }
        }
    }

    /// Where the journal lives by default (tmpfs: a reboot starts afresh, as the bindings do).
    public static let defaultDirectory = "/run/vfioctl"
    /// The state an appended line carries when it removes a device's entry.
    public static let removedState = "removed"
    /// Far more than any host's devices need; a bigger file is not vfioctl's.
    static let maximumSize = 64 << 20
    /// More than any one record takes (an address, two driver names, a state and a time).
    static let maximumRecordLength = 64 << 10

    /// The index of the first newline at or after `start` (memchr: a debug build's element loop
    /// over a large damaged file would take seconds).
    static func lineEnd(in bytes: [UInt8], from start: Int) -> Int? {
        bytes.withUnsafeBufferPointer { buffer -> Int? in
            guard let base = buffer.baseAddress, start >= 0, start < buffer.count else { return nil }
            // memchr reads at most `buffer.count - start` bytes from `base + start`: inside the buffer.
            guard let hit = memchr(base + start, Int32(UInt8(ascii: "\n")), buffer.count - start) else { return nil }
            return base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
        }
    }

    /// The journal's directory.
    public let directory: String
    /// The journal file (one JSON line per change, appended).
    public var path: String { directory + "/" + Self.fileName }
    /// The journal's file name in its directory.
    static let fileName = "journal.jsonl"
    /// The single-file journal of vfioctl before 0.2 (rewritten whole per step).
    public var legacyPath: String { directory + "/journal.json" }

    /// Test hook (`BindingTestHooks`): this process's Nth append fails as a full file system
    /// would (ENOSPC), with `onwards` that one and every later one.
    let failAt: (first: Int, onwards: Bool)?
    private var appends = 0
    /// The live entries and the file's line count, known from the first append on.
    private var cache: (live: [PCIAddress: Entry], lines: Int)?

    /// A journal in `directory`; `hooks` may make appends fail (tests only).
    public init(directory: String = BindingJournal.defaultDirectory, hooks: BindingTestHooks = .none) {
        self.directory = directory
        failAt = hooks.journalFailingAppend.map { (first: $0, onwards: hooks.journalFailsOnwards) }
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()

    /// The live entries, in address order.
    public func entries() throws(BindingError) -> [Entry] {
        try load().live.values.sorted { $0.address < $1.address }
    }

    /// The live entry for `address`, if any; throws when the journal cannot be read or is damaged.
    public func entry(for address: PCIAddress) throws(BindingError) -> Entry? {
        try load().live[address]
    }

    /// Reads and validates the whole file: every line must be a record with a canonical address,
    /// a known state and driver names that are single path components.
    func load() throws(BindingError) -> (live: [PCIAddress: Entry], lines: Int, validLength: Int) {
        if access(legacyPath, F_OK) == 0 {
            throw .journalUnreadable(path: legacyPath, reason: "it was written by an older vfioctl; return its devices with that version (`vfioctl restore --all`) or check it and move it aside")
        }
        var status = stat()
        if lstat(path, &status) != 0 && errno == ENOENT { return ([:], 0, 0) }
        let bytes: [UInt8]
        do { bytes = try SafeFile.read(path, limit: Self.maximumSize, followFinalLink: false) } catch {
            throw .journalUnreadable(path: path, reason: error.reason)
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        var live: [PCIAddress: Entry] = [:]
        var lineNumber = 0
        var start = 0
        var validLength = 0
        while start < bytes.count {
            // A last line without its newline is a torn append: the change after it never began.
            // Longer than any record, it is damage instead (a file overwritten or filled by
            // something else), and a journal that may hide live entries is not read as empty.
            guard let end = Self.lineEnd(in: bytes, from: start) else {
                if bytes.count - start > Self.maximumRecordLength {
                    throw .journalUnreadable(path: path, reason: "its last \(bytes.count - start) bytes have no line end, more than a torn record could leave; check which devices it held, then move it aside")
                }
                break
            }
            lineNumber += 1
            let text = bytes[start..<end]
            start = end + 1
            validLength = start
            let line: Line
            do { line = try decoder.decode(Line.self, from: Data(text)) } catch {
                throw .journalUnreadable(path: path, reason: "line \(lineNumber) is not a journal record")
            }
            let address: PCIAddress
            switch BindingValidation.canonicalAddress(line.address) {
            case .success(let parsed): address = parsed
            case .failure(let problem):
                throw .journalUnreadable(path: path, reason: "line \(lineNumber): address \"\(line.address)\" \(problem)")
            }
            for name in [line.originalDriver, line.originalOverride].compactMap({ $0 }) {
                if let problem = BindingValidation.driverNameProblem(name) {
                    throw .journalUnreadable(path: path, reason: "line \(lineNumber): driver \"\(name)\" \(problem)")
                }
            }
            if let owner = line.nodeOwner, let problem = NodeOwner.nameProblem(owner.user) ?? NodeOwner.nameProblem(owner.group) {
                throw .journalUnreadable(path: path, reason: "line \(lineNumber): node owner \"\(owner)\" \(problem)")
            }
            let barSizes = line.barSizes ?? []
            if let problem = barSizes.lazy.compactMap(\.problem).first {
                throw .journalUnreadable(path: path, reason: "line \(lineNumber): \(problem)")
            }
            if Set(barSizes.map(\.bar)).count != barSizes.count {
                throw .journalUnreadable(path: path, reason: "line \(lineNumber): a BAR is recorded twice")
            }
            if line.state == Self.removedState {
                live[address] = nil
                continue
            }
            guard let state = State(rawValue: line.state) else {
                throw .journalUnreadable(path: path, reason: "line \(lineNumber): unknown state \"\(line.state)\"")
            }
            live[address] = Entry(address: address, originalDriver: line.originalDriver, originalOverride: line.originalOverride,
                                  identity: line.identity, state: state, updated: line.updated, nodeOwner: line.nodeOwner,
                                  barSizes: barSizes)
        }
        return (live, lineNumber, validLength)
    }

    /// Inserts or replaces entries, all in one append.
    public func record(_ entries: [Entry]) throws(BindingError) {
        guard !entries.isEmpty else { return }
        try append(entries.map(Line.init))
    }

    /// Appends `entry`; throws when it cannot be written.
    public func record(_ entry: Entry) throws(BindingError) { try record([entry]) }

    /// Drops the entries of `addresses` (those it has), in one append.
    public func remove(_ addresses: [PCIAddress]) throws(BindingError) {
        let live = try current().live
        let present = addresses.filter { live[$0] != nil }
        guard !present.isEmpty else { return }
        try append(present.map { Line(address: $0.description, state: Self.removedState, updated: Date()) })
    }

    /// Appends the removal of `address`'s entry; throws when it cannot be written.
    public func remove(_ address: PCIAddress) throws(BindingError) { try remove([address]) }

    private func current() throws(BindingError) -> (live: [PCIAddress: Entry], lines: Int) {
        if let cache { return cache }
        let loaded = try load()
        // A torn tail is cut before anything is appended after it.
        if loaded.validLength < fileSize() { try truncateFile(to: loaded.validLength) }
        cache = (loaded.live, loaded.lines)
        return (loaded.live, loaded.lines)
    }

    private func fileSize() -> Int {
        var status = stat()
        return stat(path, &status) == 0 ? Int(status.st_size) : 0
    }

    private func truncateFile(to length: Int) throws(BindingError) {
        guard truncate(path, off_t(length)) == 0 else {
            throw .journalUnwritable(path: path, reason: String(cString: strerror(errno)))
        }
    }

    private func append(_ lines: [Line]) throws(BindingError) {
        var state = try current()
        appends += 1
        if let failAt, appends == failAt.first || (failAt.onwards && appends > failAt.first) {
            throw .journalUnwritable(path: path, reason: "\(String(cString: strerror(ENOSPC))) (injected by a test hook)")
        }
        for line in lines {
            guard let address = try? PCIAddress(parsing: line.address) else { continue }
            if line.state == Self.removedState {
                state.live[address] = nil
            } else if let value = State(rawValue: line.state) {
                state.live[address] = Entry(address: address, originalDriver: line.originalDriver, originalOverride: line.originalOverride,
                                            identity: line.identity, state: value, updated: line.updated, nodeOwner: line.nodeOwner,
                                            barSizes: line.barSizes ?? [])
            }
        }
        state.lines += lines.count
        if state.live.isEmpty {
            // Nothing left to undo: no journal at all is the clean state.
            // Only a regular file is removed: a symlink or a node in its place is left alone.
            do { try SafeFile.removeBeneath(root: directory, relative: Self.fileName) } catch {
                throw .journalUnwritable(path: path, reason: error.reason)
            }
            cache = (state.live, 0)
            return
        }
        if state.lines > 2 * state.live.count + 64 {
            try rewrite(state.live)
            cache = (state.live, state.live.count)
            return
        }
        try write(lines, appending: true)
        cache = state
    }

    private func encode(_ lines: [Line]) throws(BindingError) -> [UInt8] {
        var bytes: [UInt8] = []
        for line in lines {
            do { bytes += try Self.encoder.encode(line) } catch {
                throw .journalUnwritable(path: path, reason: "\(error)")
            }
            bytes.append(UInt8(ascii: "\n"))
        }
        return bytes
    }

    /// Replaces the file by the live entries alone: write a temporary file, flush, rename.
    private func rewrite(_ live: [PCIAddress: Entry]) throws(BindingError) {
        let lines = live.values.sorted { $0.address < $1.address }.map(Line.init)
        // A temporary file beside it, renamed over it, never over anything but a regular file.
        let bytes = try encode(lines)
        do { try SafeFile.writeAtomically(bytes, to: path, mode: 0o600) } catch {
            throw .journalUnwritable(path: path, reason: error.reason)
        }
        syncDirectory()
    }

    private func write(_ lines: [Line], appending: Bool) throws(BindingError) {
        let created = access(path, F_OK) != 0
        try write(lines, to: path, appending: appending)
        if created { syncDirectory() }
    }

    private func write(_ lines: [Line], to target: String, appending: Bool) throws(BindingError) {
        let bytes = try encode(lines)
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw .journalUnwritable(path: target, reason: String(cString: strerror(errno)))
        }
        let descriptor: Int32
        do { descriptor = try SafeFile.openOwnFile(target, flags: O_WRONLY | O_CREAT | (appending ? O_APPEND : O_TRUNC)) } catch {
            throw .journalUnwritable(path: target, reason: error.reason)
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw .journalUnwritable(path: target, reason: String(cString: strerror(errno))) }
        let before = Int(status.st_size)
        var offset = 0
        while offset < bytes.count {
            let written = SystemCall.retryingOnInterrupt {
                bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress?.advanced(by: offset), bytes.count - offset) }
            }
            guard case let .success(count) = written, count > 0 else {
                let reason = String(cString: strerror(errno))
                // Leave no partial line behind (a reader would skip it as torn anyway).
                if appending { _ = ftruncate(descriptor, off_t(before)) }
                throw .journalUnwritable(path: target, reason: reason)
            }
            offset += count
        }
        // On disk before the sysfs write it protects.
        guard fdatasync(descriptor) == 0 else {
            let reason = String(cString: strerror(errno))
            if appending { _ = ftruncate(descriptor, off_t(before)) }
            throw .journalUnwritable(path: target, reason: reason)
        }
    }

    private func syncDirectory() {
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        _ = fsync(descriptor)
        close(descriptor)
    }
}
