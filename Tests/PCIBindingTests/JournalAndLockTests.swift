import Foundation
import Testing
@testable import PCIBinding
import PCIInventory

func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "vfioctl-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite struct JournalTests {
    @Test func recordsReplacesAndRemoves() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory + "/state")
        #expect(try journal.entries().isEmpty)
        let date = Date(timeIntervalSince1970: 1_800_000_000)
        try journal.record(.init(address: "0000:03:00.0", originalDriver: "e1000e", originalOverride: nil, state: .binding, updated: date))
        try journal.record(.init(address: "0000:01:00.0", originalDriver: nil, originalOverride: "pci-stub", state: .bound, updated: date))
        try journal.record(.init(address: "0000:03:00.0", originalDriver: "e1000e", originalOverride: nil, state: .bound, updated: date))
        let entries = try journal.entries()
        #expect(entries.map(\.address) == ["0000:01:00.0", "0000:03:00.0"])
        #expect(entries[1].state == .bound && entries[1].originalDriver == "e1000e")
        #expect(entries[0].originalDriver == nil && entries[0].originalOverride == "pci-stub")
        // A second reader (another process) sees the same.
        #expect(try BindingJournal(directory: directory + "/state").entries() == entries)
        try journal.remove("0000:03:00.0")
        #expect(try journal.entries().map(\.address) == ["0000:01:00.0"])
        try journal.remove("0000:09:00.0")
        #expect(!FileManager.default.fileExists(atPath: journal.path + ".tmp"))
    }

    @Test func fileIsDocumentedJSON() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory)
        try journal.record(.init(address: "0000:03:00.0", originalDriver: "e1000e", originalOverride: nil, state: .binding, updated: Date()))
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: journal.path))) as? [String: Any]
        let entry = try #require((object?["entries"] as? [[String: Any]])?.first)
        #expect(object?["version"] as? Int == 1)
        #expect(entry["original_driver"] as? String == "e1000e")
        #expect(entry["state"] as? String == "binding")
    }

    @Test func garbageJournalIsAClearErrorNotALoss() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory)
        try "not json".write(toFile: journal.path, atomically: true, encoding: .utf8)
        #expect(throws: BindingError.self) { try journal.entries() }
        #expect(throws: BindingError.self) {
            try journal.record(.init(address: "0000:03:00.0", originalDriver: nil, originalOverride: nil, state: .binding, updated: Date()))
        }
        // The damaged file is left for the user to inspect, not overwritten.
        #expect(try String(contentsOfFile: journal.path, encoding: .utf8) == "not json")
    }
}

@Suite struct BindingLockTests {
    @Test func secondHolderWaitsThenTimesOutWithAClearMessage() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try BindingLock(directory: directory, timeout: 1)
        let started = Date()
        do {
            _ = try BindingLock(directory: directory, timeout: 0.3)
            Issue.record("a second lock was granted while the first is held")
        } catch {
            #expect(Date().timeIntervalSince(started) >= 0.25)
            guard case .lockTimeout(_, _, let holder) = error else { Issue.record("\(error)"); return }
            #expect(holder == String(getpid()))
            #expect(error.description.contains("another vfioctl"))
        }
        withExtendedLifetime(first) {}
    }

    @Test func releasedLockCanBeTakenAgain() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do { _ = try BindingLock(directory: directory, timeout: 1) }
        _ = try BindingLock(directory: directory, timeout: 0.1)
    }
}

@Suite struct UdevRulesTests {
    @Test func templateMatchesTheShippedFile() throws {
        // Tests/PCIBindingTests/ -> repository root -> udev/
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let shipped = try String(contentsOf: root.appendingPathComponent("udev/90-vfioctl-device.rules.in"), encoding: .utf8)
        #expect(shipped == UdevRules.template)
    }

    @Test func ruleIsKeyedOnTheAddressAndRoundTrips() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let rules = UdevRules(directory: directory)
        let address = try PCIAddress(parsing: "0000:3b:00.1")
        #expect(try rules.add(address))
        #expect(try !rules.add(address))
        let text = try String(contentsOfFile: rules.path(for: address), encoding: .utf8)
        #expect(text.contains("KERNEL==\"0000:3b:00.1\""))
        #expect(!text.contains("ATTR{vendor}") && !text.contains("ATTR{device}"))
        #expect(!text.contains("@ADDRESS@"))
        try "# someone else's rule\n".write(toFile: directory + "/90-vfioctl-0000:3b:00.2.rules", atomically: true, encoding: .utf8)
        #expect(rules.list() == [address])
        #expect(try rules.remove(address))
        #expect(try !rules.remove(address))
        #expect(rules.list().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: rules.path(for: address)))
    }
}
