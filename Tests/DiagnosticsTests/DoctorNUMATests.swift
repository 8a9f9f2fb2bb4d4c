import Foundation
import Testing
@testable import Diagnostics
import PCIInventory
import SysfsFixtures

@Suite struct DoctorNUMATests {
    /// Two stacks on two NUMA nodes; every fourth VF's driver pattern puts vfio-pci VFs on both.
    @Test func devicesOnTwoNodesAreNamedWithTheirNodeAndTheSpanIsAWarning() throws {
        let examined = try DoctorFixture.examine(.largeSRIOVHost(deviceCount: 40))
        let perDevice = examined.findings.filter { $0.id.hasPrefix("numa.0000:") }
        #expect(!perDevice.isEmpty)
        let far = try #require(perDevice.first { $0.title.hasSuffix("is on NUMA node 1") })
        #expect(far.status == .info)
        #expect(far.evidence.first == "numa_node 1 (CPUs 32-63)")
        #expect(far.remedy?.contains("numactl --membind=1 --cpunodebind=1") == true)
        #expect(far.remedy?.contains("pinned to CPUs 32-63") == true)
        let span = try #require(examined.finding("numa.span"))
        #expect(span.status == .warning)
        #expect(span.title == "Devices on vfio-pci sit on NUMA nodes 0, 1")
    }

    @Test func aSingleNodeHostGetsNoNUMAFinding() throws {
        let examined = try DoctorFixture.examine(.gpuWorkstation)
        #expect(!examined.ids.contains { $0.hasPrefix("numa.") })
    }
}
