import KVM
import PCIInventory
import SystemPackage
import Testing
import VFIO
@testable import Passthrough

/// Each operation on a device fails with its own case, naming the device and the cause; the
/// memslot allocator's "none left" is a case of its own with the VM's limit.
@Suite("Passthrough errors")
struct PassthroughErrorTests {
    @Test func everyOperationNamesTheDeviceAndTheCause() throws {
        let d = try PCIAddress(parsing: "0000:00:05.0")
        let cases: [(PassthroughError, String)] = [
            (.openDevice(d, cause: .vfio(.unsupported("no IOMMU"))), "opening it for the VM failed: no IOMMU"),
            (.addBARMemslots(d, cause: .noFreeMemslot(limit: 509)), "adding its BARs as memslots failed: every memslot number below the VM's limit (509"),
            (.routeMSI(d, index: PCIIRQ.msix, cause: .interruptsRoutedAlready(index: PCIIRQ.msi)), "routing its MSI-X vectors failed: its MSI vectors are routed already"),
            (.routeMSI(d, index: 0, cause: .notMessageSignalled(index: 0)), "IRQ index 0 is neither MSI nor MSI-X"),
            (.updateMSIRoute(d, vector: 7, cause: .vectorNotRouted(index: PCIIRQ.msix, vector: 7)), "updating the route of vector 7 failed: MSI-X vector 7 is not routed"),
            (.routeINTx(d, gsi: 5, cause: .kvm(.system(operation: "KVM_IRQFD", errno: .invalidArgument))), "routing INTx to GSI 5 failed: "),
            (.unrouteInterrupts(d, cause: .vfio(.unsupported("gone"))), "stopping its interrupts failed: gone"),
        ]
        for (error, expected) in cases {
            #expect(error.description.hasPrefix("0000:00:05.0: "), "\(error)")
            #expect(error.description.contains(expected), "\(error.description)")
        }
        // The cause stays typed: a VMM can match on it.
        if case let .routeMSI(device, _, cause) = cases[2].0 {
            #expect(device == d)
            #expect(cause == .interruptsRoutedAlready(index: PCIIRQ.msi))
        } else {
            Issue.record("not a routeMSI case")
        }
    }

    /// The allocator decides; "none left" becomes `.noFreeMemslot` with the table's limit.
    @Test func theInjectedAllocatorDecidesAndNoneLeftIsTyped() throws {
        var table = MemslotTable(slotsPerAddressSpace: 2)
        try table.add(Memslot(id: MemslotID(slot: 1), guestPhysicalAddress: 0, size: 0x1000, userspaceAddress: 0x7f00_0000_0000))
        #expect(try PassthroughVM.allocate(LowestFreeMemslot(), in: table) == MemslotID(slot: 0))
        #expect(try PassthroughVM.allocate(FixedSlots([9]), in: table) == MemslotID(slot: 9))
        try table.add(Memslot(id: MemslotID(slot: 0), guestPhysicalAddress: 0x1000, size: 0x1000, userspaceAddress: 0x7f00_0000_1000))
        #expect(throws: PassthroughError.noFreeMemslot(limit: 2)) { try PassthroughVM.allocate(LowestFreeMemslot(), in: table) }
    }
}
