#if canImport(Glibc)
import Glibc
#endif
import CLinuxUAPI
import SystemPackage
import TestKit
import Testing
@testable import KVM

/// An eventfd for irqfd tests, closed when the test lets it go.
final class TestEventFD {
    let fd: FileDescriptor
    init() throws {
        let raw = cuapi_eventfd(0, CUAPI_EFD_CLOEXEC)
        guard raw >= 0 else { throw Errno(rawValue: errno) }
        fd = FileDescriptor(rawValue: raw)
    }
    deinit { try? fd.close() }
    func signal() throws {
        var one: UInt64 = 1
        let written = withUnsafeBytes(of: &one) { write(fd.rawValue, $0.baseAddress, 8) }
        guard written == 8 else { throw Errno(rawValue: errno) }
    }
}

@Suite("GSI routing table")
struct GSIRoutingTableTests {
    @Test func startsAsTheIrqchipDefaults() {
        let table = GSIRoutingTable()
        // 16 GSIs on a PIC pin and the IOAPIC, 8 on the IOAPIC alone.
        #expect(table.entries.count == 16 * 2 + 8)
        #expect(table.routes[0] == [.irqchip(chip: UInt32(KVM_IRQCHIP_PIC_MASTER), pin: 0), .irqchip(chip: UInt32(KVM_IRQCHIP_IOAPIC), pin: 0)])
        #expect(table.routes[9] == [.irqchip(chip: UInt32(KVM_IRQCHIP_PIC_SLAVE), pin: 1), .irqchip(chip: UInt32(KVM_IRQCHIP_IOAPIC), pin: 9)])
        #expect(table.routes[23] == [.irqchip(chip: UInt32(KVM_IRQCHIP_IOAPIC), pin: 23)])
        #expect(table.firstFreeGSI() == 24)
    }

    @Test func msiRoutesTakeFreeGSIsAndReplaceInPlace() throws {
        var table = GSIRoutingTable(maxRoutes: 26)
        try table.setMSI(24, .x86(vector: 0x40))
        #expect(table.firstFreeGSI() == 25)
        try table.setMSI(25, .x86(vector: 0x41, destination: 2))
        #expect(table.firstFreeGSI() == nil)
        #expect(table.msi(25) == MSIMessage(addressLow: 0xfee0_2000, data: 0x41))
        try table.setMSI(24, .x86(vector: 0x50))
        #expect(table.msi(24)?.data == 0x50)
        #expect(table.entries.count == 40 + 2)
        #expect(throws: KVMError.self) { try table.setMSI(5, .x86(vector: 0x40)) }   // an irqchip pin
        #expect(throws: KVMError.self) { try table.setMSI(26, .x86(vector: 0x40)) }  // past the table
        try table.remove(24)
        #expect(table.firstFreeGSI() == 24)
        #expect(throws: KVMError.self) { try table.remove(24) }
        #expect(throws: KVMError.self) { try table.remove(3) }
    }
}

@Suite("Interrupts into a guest on /dev/kvm", .enabled(if: KVMAvailability.present, "needs a usable /dev/kvm (kvm module loaded, run as root or in group kvm)"))
struct KVMInterruptTests {
    /// An eventfd wired through KVM_IRQFD to an MSI route reaches the guest's handler with no
    /// exit to userspace; re-pointing the route at another vector is one call and the next
    /// signal lands in the other handler.
    @Test func irqfdSignalsReachTheGuestHandlerWithoutExits() throws {
        let guest = try InterruptGuest(system: try KVMSystem())
        let eventFD = try TestEventFD()
        let gsi = try guest.interrupts.addMSIRoute(.x86(vector: guest.vectors[0]))
        #expect(gsi == GSIRoutingTable.firstMSIGSI)
        try guest.interrupts.assignIRQFD(eventFD.fd, gsi: gsi)
        let signals: UInt32 = 20
        let runner = try guest.start(total: signals + 1)
        for count in 1...signals {
            try eventFD.signal()
            // Each interrupt counted before the next is sent: two signals while one is pending
            // would be one interrupt (an edge MSI is latched once in the APIC's IRR).
            let seen = try guest.waitForCounts { $0[0] >= count }
            try #require(seen[0] == count, "interrupt \(count) did not reach the handler")
        }
        try guest.interrupts.setMSIRoute(gsi, .x86(vector: guest.vectors[1]))
        #expect(guest.interrupts.routing.msi(gsi)?.data == UInt32(guest.vectors[1]))
        try eventFD.signal()
        let run = try #require(try runner.finish(seconds: 10), "the guest did not report")
        #expect(try guest.counts() == [signals, 1, 1])
        #expect(run.reported == signals + 1)
        // The only exit to userspace is the report itself.
        #expect(run.exits.filter { $0 != .interrupted }.count == 1)
        try guest.interrupts.deassignIRQFD(eventFD.fd, gsi: gsi)
        #expect(guest.interrupts.irqfds.isEmpty)
        try guest.interrupts.removeMSIRoute(gsi)
        #expect(guest.interrupts.routing.msi(gsi) == nil)
    }

    /// INTx the way VFIO delivers it: an irqfd on an IOAPIC pin with a resample eventfd, which
    /// KVM signals when the guest ends the interrupt. The guest programs no IOAPIC here, so the
    /// line stays masked; KVM still takes the level-triggered irqfd and its resample fd.
    @Test func irqfdWithResampleIsAccepted() throws {
        let system = try KVMSystem()
        let vm = try system.createVM()
        let interrupts = try InterruptController(vm: vm)
        let trigger = try TestEventFD(), resample = try TestEventFD()
        try interrupts.assignIRQFD(trigger.fd, gsi: 10, resample: resample.fd)
        #expect(interrupts.irqfds == [.init(eventFD: trigger.fd.rawValue, gsi: 10, resampleFD: resample.fd.rawValue)])
        // The same eventfd twice is refused by the kernel.
        #expect(throws: KVMError.self) { try interrupts.assignIRQFD(trigger.fd, gsi: 11) }
        try interrupts.deassignIRQFD(trigger.fd, gsi: 10)
    }

    @Test func irqchipMustComeBeforeVCPUs() throws {
        let vm = try KVMSystem().createVM()
        _ = try vm.createVCPU()
        #expect(throws: KVMError.self) { _ = try InterruptController(vm: vm) }
    }

    /// The KVM-VFIO device is created on any KVM host; it refuses a file that is not VFIO's.
    @Test func kvmVFIODeviceRefusesOtherFiles() throws {
        let vm = try KVMSystem().createVM()
        let device = try KVMVFIODevice(vm: vm)
        #expect(device.rawDescriptor >= 0)
        let notVFIO = try TestEventFD()
        #expect(throws: KVMError.self) { try device.addFile(notVFIO.fd) }
        #expect(device.files.isEmpty)
    }
}
