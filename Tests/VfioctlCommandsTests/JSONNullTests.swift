import BARPlacement
import Foundation
import HostKernel
import PCIInventory
import Testing
@testable import VfioctlCommands

/// The README's promise for --json: an absent value is null, never a missing key, and every key
/// is snake_case. Each report type is encoded with its optional fields nil, through the one
/// encoder every command uses.
@Suite struct JSONNullTests {
    /// How many stored properties of `value` are nil optionals.
    static func nilCount(_ value: Any) -> Int {
        Mirror(reflecting: value).children.filter { child in
            let mirror = Mirror(reflecting: child.value)
            return mirror.displayStyle == .optional && mirror.children.isEmpty
        }.count
    }

    /// The report's JSON object, after checking that it has a null for each nil field (and
    /// `extraNulls` more, for fields that encode themselves as null) and snake_case keys.
    @discardableResult
    static func check(_ value: some Encodable, extraNulls: Int = 0, _ name: String) throws -> [String: Any] {
        let text = try JSONOutput.encode(value)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "\(name): \(text)")
        let nulls = object.filter { $0.value is NSNull }.count
        let expected = nilCount(value) + extraNulls
        #expect(expected > 0, "\(name): the sample has no nil field, so it tests nothing")
        #expect(nulls == expected, "\(name): \(nulls) nulls for \(expected) nil fields: \(text)")
        for key in object.keys {
            #expect(key.wholeMatch(of: /[a-z][a-z0-9_]*/) != nil, "\(name): key \(key) is not snake_case")
        }
        return object
    }

    static let host = HugeFaultHost(kernel: KernelVersion(6, 12, 95), mode: nil)

    @Test func barReports() throws {
        let rule = HugeFaultRuleJSON(host: Self.host, advice: .hugePage)
        try Self.check(rule, "HugeFaultRuleJSON")
        let tried = PageGeometry.tried(under: Self.host.gate(for: .hugePage))
        let plan = try AreaPlan.make(physicalStart: 1 << 30, length: 4 << 20, faultGeometry: tried)
        let placement = try #require(plan.placements.first)
        let prediction = PredictionJSON(placement.fixed)
        let touch = TouchJSON(address: "0000:01:00.0", bar: 2, pattern: "linear", seed: nil, skew: 0, offset: 0,
                              virtualStart: 1 << 40, physicalStart: 1 << 30, size: 4 << 20, pages: 1024,
                              milliseconds: 1, plannerMilliseconds: 1, checksum: 0, predicted: prediction,
                              minimumMappingCount: 2, hugeFaults: rule)
        let object = try Self.check(touch, "TouchJSON")
        #expect(object["seed"] is NSNull)
        try Self.check(ToggleStepJSON(step: "mapped", value: "0x00000000", refused: nil), "ToggleStepJSON")
        try Self.check(ToggleStepJSON(step: "decoding-off", value: nil, refused: "refused"), "ToggleStepJSON refused")
        try Self.check(VerdictJSON(order: 9, possible: true, reason: nil), "VerdictJSON")
    }

    @Test func deviceInfoReports() throws {
        let region = RegionJSON(index: 7, size: 256, offset: 0, flags: 3, readable: true, writable: true, mappable: false,
                                sparseAreas: nil, mmapAreas: [], msixMappable: false, type: nil)
        let object = try Self.check(region, "RegionJSON")
        #expect(object["sparse_areas"] is NSNull && object["type"] is NSNull)
        try Self.check(DeviceInfoJSON(address: "0000:01:00.0", group: 1, backend: "type1", flags: 0, supportsReset: false,
                                      regions: [region], irqs: [], reset: nil), "DeviceInfoJSON")
        // Each resizable BAR: its size now and the sizes offered, in the text and the JSON.
        let resizable = ResizableBAR(index: 1, currentSize: 256 << 20, supportedSizes: [256 << 20, 512 << 20, 1 << 30],
                                     kernelSizes: [256 << 20, 512 << 20, 1 << 30])
        let info = DeviceInfoJSON(address: "0000:01:00.0", group: 1, backend: "type1", flags: 0, supportsReset: false,
                                  regions: [region], irqs: [], reset: nil, resizableBARs: [resizable])
        #expect(info.textLines().contains("  Resizable BAR1: 256 MiB now; supports 256 MiB-1 GiB (3 sizes) through resource1_resize"))
        let entries = try #require(try Self.check(info, "DeviceInfoJSON with a resizable BAR")["resizable_bars"] as? [[String: Any]])
        #expect(entries.first?["current_size"] as? UInt64 == 256 << 20)
        #expect(entries.first?["kernel_sizes"] as? [UInt64] == [256 << 20, 512 << 20, 1 << 30])
    }

    // vm-smoke's report lives in the lab's probe tool (vfioctl-lab-probe), not in the CLI.
    @Test func interruptReports() throws {
        try Self.check(IRQTestJSON.Vector(vector: 0, signals: 0, microseconds: nil, stray_vectors: []), "IRQTestJSON.Vector")
    }

    @Test func dmaCheckReport() throws {
        let report = DMACheckJSON(address: "0000:01:00.0", group: 1, backend: "iommufd", iovaPageSizes: 4096, pageSizes: [4096], iovaRanges: [],
                                  dmaAvailable: nil, dmaAvailableWhileMapped: nil, dmaAvailableAfter: nil,
                                  memlockCurrent: nil, memlockMaximum: nil, memlockExempt: true, testBytes: 4096,
                                  testMappings: [], backing: "4K", mapMilliseconds: 0, leftMapped: 0, vmBudget: VMBudgetJSON(nil))
        // vm_budget writes itself as null when there is no budget.
        try Self.check(report, extraNulls: 1, "DMACheckJSON")
    }
}
