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
