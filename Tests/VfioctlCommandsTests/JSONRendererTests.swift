import Foundation
import SysfsFixtures
import Testing
@testable import PCIInventory
@testable import VfioctlCommands

@Suite struct JSONRendererTests {
    func foundation<T: Encodable>(_ value: T) throws -> String { try JSONOutput.encode(value) }

    @Test func listAndGroupsRenderExactlyAsFoundation() throws {
        for host in [FixtureHost.gpuWorkstation, FixtureHost.broken, FixtureHost.noIOMMU] {
            try withTemporarySysfsTree(host) { tree throws in
                let inventory = try PCIInventory.scan(root: SysfsRoot(path: tree.rootPath), detail: .summary, names: PCINameDatabase())
                let list = JSONValue.array(inventory.devices.map(JSONValue.deviceSummary))
                #expect(list.rendered() == (try foundation(list)))
                let groups = JSONValue.array(inventory.groups.map(JSONValue.group))
                #expect(groups.rendered() == (try foundation(groups)))
                let details = JSONValue.array(inventory.devices.map { JSONValue.deviceDetail($0, in: inventory) })
                #expect(details.rendered() == (try foundation(details)))
            }
        }
    }

    @Test func escapingAndEmptyContainersMatchFoundation() throws {
        let tricky = JSONValue.object([
            ("quote\"back\\slash", .string("line\nfeed\ttab\u{01}ctl \u{7f} é / slash")),
            ("empty_array", .array([])), ("empty_object", .object([])),
            ("numbers", .array([.unsigned(UInt64.max), .integer(-1), .integer(0)])),
            ("b", .bool(false)), ("a", .null), ("B", .bool(true)),
        ])
        #expect(tricky.rendered() == (try foundation(tricky)))
    }
}

/// The one encoder: any Encodable, declared in any module (this test module here, like the probe
/// tool's reports), comes out with null for an absent optional, and numbers as JSONEncoder writes
/// them.
@Suite struct JSONTreeEncoderTests {
    struct Sample: Encodable {
        let name: String
        let missing: Int?
        let nested: [Inner?]
        let ratio: Double
        let ratios: [Double]
        let small: UInt8
        let negative: Int32
        let flag: Bool?
        struct Inner: Encodable { let gone: String?; let here: UInt64 }
    }

    @Test func aReportOfAnotherModuleKeepsItsNulls() throws {
        let sample = Sample(name: "x/y", missing: nil, nested: [Sample.Inner(gone: nil, here: UInt64.max), nil], ratio: 1.5,
                            ratios: [0, 1, 0.1, 1e-7, 12345678.9, -2.25, 1e21], small: 255, negative: -7, flag: nil)
        let text = try JSONOutput.encode(sample)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(object["missing"] is NSNull && object["flag"] is NSNull, "\(text)")
        let nested = try #require(object["nested"] as? [Any])
        #expect((nested.first as? [String: Any])?["gone"] is NSNull && nested.last is NSNull, "\(text)")
        // Without the nulls, the rest is byte for byte what Foundation's JSONEncoder writes.
        struct Full: Encodable { let name: String; let ratio: Double; let ratios: [Double]; let small: UInt8; let negative: Int32 }
        let full = Full(name: sample.name, ratio: sample.ratio, ratios: sample.ratios, small: sample.small, negative: sample.negative)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        #expect(try JSONOutput.encode(full) == String(decoding: try encoder.encode(full), as: UTF8.self))
    }

    @Test func nonFiniteNumbersAreRefused() {
        struct Bad: Encodable { let value: Double }
        #expect(throws: EncodingError.self) { try JSONOutput.encode(Bad(value: .infinity)) }
        #expect(throws: EncodingError.self) { try JSONOutput.encode([Double.nan]) }
    }
}
