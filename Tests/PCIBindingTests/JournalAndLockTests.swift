import Foundation
import Testing
@testable import PCIBinding
@testable import PCIInventory
#if canImport(Glibc)
import Glibc
#endif

func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "vfioctl-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func address(_ text: String) -> PCIAddress {
    // Test literals are well-formed; a typo fails loudly here.
    guard let parsed = try? PCIAddress(parsing: text) else { fatalError("bad test address \(text)") }
    return parsed
}

let nicIdentity = DeviceIdentity(vendorID: 0x8086, deviceID: 0x10d3, subsystemVendorID: 0x8086, subsystemDeviceID: 0)

@Suite struct JournalTests {
    @Test func recordsReplacesAndRemoves() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory + "/state")
        #expect(try journal.entries().isEmpty)
        let date = Date(timeIntervalSince1970: 1_800_000_000)
        try journal.record(.init(address: address("0000:03:00.0"), originalDriver: "e1000e", originalOverride: nil, identity: nicIdentity, state: .binding, updated: date))
        try journal.record(.init(address: address("0000:01:00.0"), originalDriver: nil, originalOverride: "pci-stub", identity: nil, state: .bound, updated: date))
        try journal.record(.init(address: address("0000:03:00.0"), originalDriver: "e1000e", originalOverride: nil, identity: nicIdentity, state: .bound, updated: date))
        let entries = try journal.entries()
        #expect(entries.map(\.address.description) == ["0000:01:00.0", "0000:03:00.0"])
        #expect(entries[1].state == .bound && entries[1].originalDriver == "e1000e" && entries[1].identity == nicIdentity)
        #expect(entries[0].originalDriver == nil && entries[0].originalOverride == "pci-stub")
        // A second reader (another process) sees the same.
        #expect(try BindingJournal(directory: directory + "/state").entries() == entries)
        try journal.remove(address("0000:03:00.0"))
        #expect(try journal.entries().map(\.address.description) == ["0000:01:00.0"])
        try journal.remove(address("0000:09:00.0"))
        // The last entry gone, no journal is left at all.
        try journal.remove(address("0000:01:00.0"))
        #expect(!FileManager.default.fileExists(atPath: journal.path))
    }

    @Test func fileIsDocumentedJSONLines() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory)
        try journal.record(.init(address: address("0000:03:00.0"), originalDriver: "e1000e", originalOverride: nil, identity: nicIdentity, state: .binding))
        try journal.record(.init(address: address("0000:03:00.0"), originalDriver: "e1000e", originalOverride: nil, identity: nicIdentity, state: .bound))
        let lines = try String(contentsOfFile: journal.path, encoding: .utf8).split(separator: "\n")
        // Appended, not rewritten: one line per record.
        #expect(lines.count == 2)
        let object = try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as? [String: Any]
        #expect(object?["original_driver"] as? String == "e1000e")
        #expect(object?["state"] as? String == "bound")
        #expect(object?["original_override"] is NSNull)
        let identity = object?["identity"] as? [String: Any]
        #expect(identity?["vendor"] as? String == "8086" && identity?["device"] as? String == "10d3")
    }

    @Test func garbageJournalIsAClearErrorNotALoss() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory)
        try "not json\n".write(toFile: journal.path, atomically: true, encoding: .utf8)
        #expect(throws: BindingError.self) { try journal.entries() }
        #expect(throws: BindingError.self) {
            try journal.record(.init(address: address("0000:03:00.0"), originalDriver: nil, originalOverride: nil, identity: nil, state: .binding))
        }
        // The damaged file is left for the user to inspect, not overwritten.
        #expect(try String(contentsOfFile: journal.path, encoding: .utf8) == "not json\n")
    }

    func line(address: String, driver: String? = "e1000e", override: String? = nil, state: String = "bound") -> String {
        func quoted(_ value: String?) -> String { value.map { "\"\($0)\"" } ?? "null" }
        return "{\"address\":\(quoted(address)),\"identity\":null,\"original_driver\":\(quoted(driver)),\"original_override\":\(quoted(override)),\"state\":\"\(state)\",\"updated\":\"2026-11-26T12:00:00Z\"}\n"
    }

    /// A crafted journal must not put a path into a sysfs write: non-canonical addresses and
    /// driver names that are not single path components are refused when read.
    @Test(arguments: [
        ("../../../../tmp/x", "e1000e", "address"),
        ("0000:03:00.0/../../../x", "e1000e", "address"),
        ("3:00.0", "e1000e", "canonical"),
        ("0000:03:00.0 ", "e1000e", "canonical"),
        ("0000:03:00.0", "../../../../../tmp/evil", "driver"),
        ("0000:03:00.0", "..", "driver"),
        ("0000:03:00.0", "e1000e\\u0000x", "driver"),
        ("0000:03:00.0", String(repeating: "a", count: 65), "driver"),
    ])
    func craftedValuesAreRefused(address: String, driver: String, named: String) throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory)
        try line(address: address, driver: driver).write(toFile: journal.path, atomically: true, encoding: .utf8)
        do {
            _ = try journal.entries()
            Issue.record("accepted \(address) / \(driver)")
        } catch {
            #expect(error.description.contains(named), "\(error)")
        }
        // The override is checked as strictly as the driver.
        try line(address: "0000:03:00.0", override: "../x").write(toFile: journal.path, atomically: true, encoding: .utf8)
        #expect(throws: BindingError.self) { try journal.entries() }
    }

    @Test func aTornLastLineIsIgnoredAndCutBeforeTheNextAppend() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory)
        let whole = line(address: "0000:03:00.0")
        try (whole + String(line(address: "0000:04:00.0").prefix(30))).write(toFile: journal.path, atomically: true, encoding: .utf8)
        #expect(try journal.entries().map(\.address.description) == ["0000:03:00.0"])
        try journal.record(.init(address: address("0000:05:00.0"), originalDriver: nil, originalOverride: nil, identity: nil, state: .binding))
        #expect(try journal.entries().map(\.address.description) == ["0000:03:00.0", "0000:05:00.0"])
        #expect(try String(contentsOfFile: journal.path, encoding: .utf8).split(separator: "\n").count == 2)
    }

    @Test func theOldSingleFileJournalIsNotIgnored() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory)
        try "{\"version\":1,\"entries\":[]}".write(toFile: journal.legacyPath, atomically: true, encoding: .utf8)
        #expect(throws: BindingError.self) { try journal.entries() }
    }

    @Test func aFIFOInPlaceOfTheJournalDoesNotHang() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory)
        #expect(mkfifo(journal.path, 0o600) == 0)
        do {
            _ = try journal.entries()
            Issue.record("a FIFO was read as a journal")
        } catch {
            #expect(error.description.contains("not a regular file"))
        }
    }

    @Test func theFaultHookFailsTheNamedAppends() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory, hooks: BindingTestHooks(environment: ["VFIOCTL_JOURNAL_FAIL": "2+"]))
        let entry = BindingJournal.Entry(address: address("0000:03:00.0"), originalDriver: nil, originalOverride: nil, identity: nil, state: .binding, updated: Date(timeIntervalSince1970: 1_800_000_000))
        try journal.record(entry)
        #expect(throws: BindingError.self) { try journal.record(entry) }
        #expect(throws: BindingError.self) { try journal.remove(entry.address) }
        // What was written stays true.
        #expect(try BindingJournal(directory: directory).entries() == [entry])
    }

    /// Many devices, many steps: the file stays linear in the live entries (compacted when dead
    /// lines dominate).
    @Test func compactionKeepsTheFileSmall() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory)
        let keep = BindingJournal.Entry(address: address("0000:01:00.0"), originalDriver: "igb", originalOverride: nil, identity: nil, state: .bound)
        try journal.record(keep)
        for round in 0..<200 {
            let entry = BindingJournal.Entry(address: address("0000:02:00.\(round % 8)"), originalDriver: "igb", originalOverride: nil, identity: nil, state: .binding)
            try journal.record(entry)
            try journal.remove(entry.address)
        }
        #expect(try journal.entries().map(\.address) == [keep.address])
        #expect(try String(contentsOfFile: journal.path, encoding: .utf8).split(separator: "\n").count <= 2 * 1 + 64 + 1)
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
