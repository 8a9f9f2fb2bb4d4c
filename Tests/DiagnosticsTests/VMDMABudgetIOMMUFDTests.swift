import Diagnostics
import Testing
import VFIO

@Suite("VM DMA budget on iommufd")
struct VMDMABudgetIOMMUFDTests {
    @Test("iommufd has no entry limit; memlock is judged the same")
    func noEntryLimit() {
        var input = VMDMABudget.Input(guestMemory: 8 << 30, devices: 1, vIOMMU: true, memlockLimit: 16 << 30,
                                      dmaEntryLimit: 1000, addressWidth: 48)
        let type1 = VMDMABudget(input)
        #expect(type1.mappingsFit == false)
        #expect(!type1.fits)
        input.accounting = .iommufd
        let iommufd = VMDMABudget(input)
        #expect(iommufd.mappingsFit == nil)
        #expect(iommufd.memlockNeeded == type1.memlockNeeded)
        #expect(iommufd.fits)
    }
}
