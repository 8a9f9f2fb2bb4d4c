import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// The record of every device vfioctl has taken from its driver, written before anything changes
/// so that an interrupted run can be undone by `vfioctl restore`. One JSON file, replaced
/// atomically (write, fsync, rename) so a crash leaves either the old or the new journal.
public struct BindingJournal: Sendable {
    public enum State: String, Codable, Sendable {
        /// A bind was started and may be anywhere between its first and last step.
        case binding
        /// The device is on vfio-pci; the entry remembers what to return it to.
        case bound
        /// A return to the original driver was started.
        case unbinding
    }

    public struct Entry: Codable, Sendable, Equatable {
        public var address: String
        /// The driver the device had before vfioctl touched it; nil when it had none.
        public var originalDriver: String?
        /// driver_override before vfioctl touched it; nil when unset.
        public var originalOverride: String?
        public var state: State
        public var updated: Date

        enum CodingKeys: String, CodingKey {
            case address, state, updated
            case originalDriver = "original_driver"
            case originalOverride = "original_override"
        }

        public init(address: String, originalDriver: String?, originalOverride: String?, state: State, updated: Date) {
            self.address = address
            self.originalDriver = originalDriver
            self.originalOverride = originalOverride
            self.state = state
            self.updated = updated
        }

        /// "No driver" is a fact worth recording: written as null, not left out.
        public func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(address, forKey: .address)
            try container.encode(originalDriver, forKey: .originalDriver)
            try container.encode(originalOverride, forKey: .originalOverride)
            try container.encode(state, forKey: .state)
            try container.encode(updated, forKey: .updated)
        }
    }

    struct File: Codable {
        var version = 1
        var entries: [Entry] = []
    }

    public static let defaultDirectory = "/run/vfioctl"

    public let directory: String
    public var path: String { directory + "/journal.json" }

    public init(directory: String = BindingJournal.defaultDirectory) {
        self.directory = directory
    }

    public func entries() throws(BindingError) -> [Entry] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            return try decoder.decode(File.self, from: data).entries
        } catch {
            throw .journalUnreadable(path: path, reason: "\(error)")
        }
    }

    public func entry(for address: String) throws(BindingError) -> Entry? {
        try entries().first { $0.address == address }
    }

    /// Inserts or replaces the entry for its address.
    public func record(_ entry: Entry) throws(BindingError) {
        var all = try entries().filter { $0.address != entry.address }
        all.append(entry)
        all.sort { $0.address < $1.address }
        try write(all)
    }

    public func remove(_ address: String) throws(BindingError) {
        let all = try entries()
        guard all.contains(where: { $0.address == address }) else { return }
        try write(all.filter { $0.address != address })
    }

    func write(_ entries: [Entry]) throws(BindingError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.dateEncodingStrategy = .iso8601
            let data = try encoder.encode(File(entries: entries))
            let temporary = path + ".tmp"
            let descriptor = try FileDescriptor.open(temporary, .writeOnly, options: [.create, .truncate, .closeOnExec],
                                                     permissions: [.ownerReadWrite])
            try descriptor.closeAfter {
                _ = try descriptor.writeAll(data)
                // The journal must be on disk before the sysfs write it protects.
                guard fsync(descriptor.rawValue) == 0 else { throw Errno(rawValue: errno) }
            }
            guard rename(temporary, path) == 0 else { throw Errno(rawValue: errno) }
            let directoryDescriptor = try FileDescriptor.open(directory, .readOnly, options: [.directory, .closeOnExec])
            try directoryDescriptor.closeAfter { _ = fsync(directoryDescriptor.rawValue) }
        } catch let error as BindingError {
            throw error
        } catch {
            throw .journalUnwritable(path: path, reason: "\(error)")
        }
    }
}
