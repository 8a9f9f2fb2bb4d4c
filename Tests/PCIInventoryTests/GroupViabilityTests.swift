import Testing
@testable import PCIInventory

@Suite struct GroupViabilityTests {
    func device(_ address: String, class classCode: UInt32, driver: String?) throws -> PCIDevice {
        var device = PCIDevice(address: try PCIAddress(parsing: address))
        device.classCode = classCode
        device.driver = driver
        return device
    }

    @Test func allowedDriversDoNotBlock() throws {
        for driver in [nil, "vfio-pci", "pci-stub", "mlx5_vfio_pci", "nvgrace_gpu_vfio_pci"] {
            #expect(GroupViability.blockReason(for: try device("01:00.0", class: 0x030000, driver: driver)) == nil)
        }
    }

    @Test func hostDriversBlockAndSayWhatToDo() throws {
        let reason = GroupViability.blockReason(for: try device("01:00.1", class: 0x040300, driver: "snd_hda_intel"))
        #expect(reason?.contains("snd_hda_intel") == true)
        #expect(reason?.contains("vfio-pci") == true)
    }

    @Test func bridgesMayKeepPortDrivers() throws {
        #expect(GroupViability.blockReason(for: try device("00:01.0", class: 0x060400, driver: "pcieport")) == nil)
        #expect(GroupViability.blockReason(for: try device("00:1e.0", class: 0x060401, driver: "shpchp")) == nil)
        // Only bridges: an endpoint bound to pcieport is still a host driver.
        #expect(GroupViability.blockReason(for: try device("01:00.0", class: 0x020000, driver: "pcieport")) != nil)
        #expect(GroupViability.blockReason(for: try device("00:02.0", class: 0x060400, driver: "foo")) != nil)
    }

    @Test func groupListsEveryBlocker() throws {
        let members = [
            try device("00:01.0", class: 0x060400, driver: "pcieport"),
            try device("01:00.0", class: 0x030000, driver: "vfio-pci"),
            try device("01:00.1", class: 0x040300, driver: "snd_hda_intel"),
            try device("01:00.2", class: 0x0c0330, driver: "xhci_hcd"),
        ]
        let blockers = GroupViability.blockers(members: members, otherMembers: [("platform-x", nil), ("platform-y", "dwc3")])
        #expect(blockers.map(\.address) == ["0000:01:00.1", "0000:01:00.2", "platform-y"])
        #expect(blockers.map(\.driver) == ["snd_hda_intel", "xhci_hcd", "dwc3"])
    }

    @Test func iommuAdviceOnlyWithoutGroups() {
        let none = IOMMUStatus(units: [], groupCount: 0, kernelCommandLine: "root=/dev/vda ro")
        #expect(!none.isAvailable)
        #expect(none.advice.contains { $0.contains("intel_iommu=on") })
        #expect(none.advice.contains { $0.contains("VT-d") })
        #expect(none.advice.contains { $0.contains("/sys/class/iommu") })
        let withParameter = IOMMUStatus(units: ["dmar0"], groupCount: 0, kernelCommandLine: "intel_iommu=off")
        #expect(withParameter.advice.contains { $0.contains("intel_iommu=off") })
        #expect(withParameter.advice.contains { $0.contains("dmar0") })
        #expect(IOMMUStatus(units: ["dmar0"], groupCount: 3, kernelCommandLine: nil).advice.isEmpty)
    }
}
