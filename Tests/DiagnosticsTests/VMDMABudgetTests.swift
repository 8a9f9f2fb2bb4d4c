import Testing
@testable import Diagnostics

@Suite struct VMDMABudgetTests {
    static let gib: UInt64 = 1 << 30

    @Test func memlockIsLibvirtsRule() {
        let plain = VMDMABudget(.init(guestMemory: 16 * Self.gib, devices: 4, vIOMMU: false, memlockLimit: 17 * Self.gib, dmaEntryLimit: nil, addressWidth: nil))
        #expect(plain.memlockNeeded == 17 * Self.gib)
        #expect(plain.memlockFits == true)
        let viommu = VMDMABudget(.init(guestMemory: 16 * Self.gib, devices: 4, vIOMMU: true, memlockLimit: 17 * Self.gib, dmaEntryLimit: nil, addressWidth: nil))
        #expect(viommu.memlockNeeded == 65 * Self.gib)
        #expect(viommu.memlockFits == false && !viommu.fits)
        let unlimited = VMDMABudget(.init(guestMemory: 16 * Self.gib, devices: 4, vIOMMU: true, memlockLimit: nil, dmaEntryLimit: nil, addressWidth: nil))
        #expect(unlimited.memlockFits == true)
        // One device with a vIOMMU is the same as without; no VFIO device pins nothing.
        let one = VMDMABudget(.init(guestMemory: 16 * Self.gib, devices: 1, vIOMMU: true, memlockLimit: nil, dmaEntryLimit: nil, addressWidth: nil))
        #expect(one.memlockNeeded == 17 * Self.gib)
        let none = VMDMABudget(.init(guestMemory: 16 * Self.gib, devices: 0, vIOMMU: true, memlockLimit: 1, dmaEntryLimit: nil, addressWidth: nil))
        #expect(none.memlockNeeded == 0 && none.memlockFits == true)
    }

    @Test func mappingsAgainstDMAEntryLimitAtThePageSize() {
        let small = VMDMABudget(.init(guestMemory: 8 * Self.gib, devices: 1, vIOMMU: true, pageSize: 4096, memlockLimit: nil, dmaEntryLimit: 65535, addressWidth: nil))
        #expect(small.mappingsPerContainer == 2_097_152)
        #expect(small.mappingsFit == false)
        let huge = VMDMABudget(.init(guestMemory: 8 * Self.gib, devices: 1, vIOMMU: true, pageSize: 2 << 20, memlockLimit: nil, dmaEntryLimit: 65535, addressWidth: nil))
        #expect(huge.mappingsPerContainer == 4096 && huge.mappingsFit == true)
        let noVIOMMU = VMDMABudget(.init(guestMemory: 8 * Self.gib, devices: 2, vIOMMU: false, barSizes: [256 << 20, 16 << 20], memlockLimit: nil, dmaEntryLimit: 10, addressWidth: nil))
        #expect(noVIOMMU.mappingsPerContainer == 4 && noVIOMMU.mappingsFit == true)
    }

    @Test func guestAddressesAgainstTheIOMMUWidth() {
        // 8 GiB: 2 GiB below 4 GiB, 6 GiB from 4 GiB: RAM ends at 10 GiB.
        let eight = VMDMABudget(.init(guestMemory: 8 * Self.gib, devices: 1, vIOMMU: false, memlockLimit: nil, dmaEntryLimit: nil, addressWidth: 39))
        #expect(eight.highestAddress == 10 * Self.gib)
        #expect(eight.addressFits == true)
        // 2 GiB stays below 4 GiB entirely.
        #expect(VMDMABudget(.init(guestMemory: 2 * Self.gib, devices: 1, vIOMMU: false, memlockLimit: nil, dmaEntryLimit: nil, addressWidth: nil)).highestAddress == 2 * Self.gib)
        // A 32 GiB BAR after 10 GiB of RAM is aligned to 32 GiB: it ends at 64 GiB.
        let bar = VMDMABudget(.init(guestMemory: 8 * Self.gib, devices: 1, vIOMMU: false, barSizes: [32 * Self.gib], memlockLimit: nil, dmaEntryLimit: nil, addressWidth: 36))
        #expect(bar.highestAddress == 64 * Self.gib)
        #expect(bar.addressFits == true)
        let tooBig = VMDMABudget(.init(guestMemory: 600 * Self.gib, devices: 1, vIOMMU: false, memlockLimit: nil, dmaEntryLimit: nil, addressWidth: 39))
        #expect(tooBig.addressFits == false)
    }

    @Test func overflowNeverTrapsAndNeverFits() {
        let absurd = VMDMABudget(.init(guestMemory: .max, devices: 4096, vIOMMU: true, barSizes: [1 << 63], memlockLimit: 1 << 40, dmaEntryLimit: 65535, addressWidth: 64))
        #expect(absurd.memlockNeeded == nil && absurd.memlockFits == false)
        #expect(absurd.highestAddress == nil && absurd.addressFits == false)
    }

    @Test func doctorNamesEachLimit() throws {
        var host = try DoctorFixture.examine().host
        host.plannedGuestMemory = 16 * Self.gib
        host.plannedDevices = 2
        host.plannedVIOMMU = true
        host.memlockKnown = true
        host.memlockLimit = 20 * Self.gib
        host.dmaEntryLimit = 65535
        host.iommuAddressWidth = 39
        let finding = try #require(Doctor.dmaBudget(host).first)
        #expect(finding.id == "dma.budget" && finding.status == .warning)
        #expect(finding.evidence.contains { $0.hasPrefix("memlock: needs 33 GiB") })
        #expect(finding.remedy?.contains("dma_entry_limit=4194304") == true)
        host.plannedVIOMMU = false
        host.plannedDevices = 1
        let fine = try #require(Doctor.dmaBudget(host).first)
        #expect(fine.status == .ok)
        #expect(fine.evidence.contains("guest RAM ends at 0x480000000; the IOMMU translates 39-bit addresses"))
        // One container pins RAM once: memory.memlock judges that, dma.budget does not warn twice.
        host.memlockLimit = 1 * Self.gib
        #expect(Doctor.dmaBudget(host).first?.status == .ok)
        #expect(Doctor.memory(host).first { $0.id == "memory.memlock" }?.status == .warning)
    }
}
