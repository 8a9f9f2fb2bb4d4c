import PCIInventory
import Testing
@testable import VFIO

/// The reset orchestration's decisions that need no device: the "answers" rule, the method
/// choice failing before anything is opened, and the caller's approval coming before any reset.
@Suite struct DeviceResetTests {
    private struct Refused: Error, Equatable {}

    @Test func answersMeansAVendorThatIsNeitherAllOnesNorZero() throws {
        #expect(ResetDeviceState.answers(vendor: 0x8086))
        #expect(!ResetDeviceState.answers(vendor: 0xffff))
        #expect(!ResetDeviceState.answers(vendor: 0))
        let address = try PCIAddress(domain: 0, bus: 1, device: 0, function: 0)
        let outcome = ResetOutcome(method: .flr, devices: [ResetDeviceState(address: address, group: 3, vendor: 0x10de),
                                                          ResetDeviceState(address: address, group: 3, vendor: 0xffff)])
        #expect(!outcome.allAnswer)
    }

    @Test func aMethodTheDeviceDoesNotOfferFailsBeforeApprovalOrOpening() throws {
        let address = try PCIAddress(domain: 0, bus: 1, device: 0, function: 0)
        var approvals = 0
        #expect {
            _ = try DeviceReset.perform(address, requested: .pm, offered: ["flr", "bus"], group: 3, backend: .type1,
                                        sysfsRoot: "/nonexistent", devVFIO: "/nonexistent") { _ in approvals += 1 }
        } throws: { error in
            guard case DeviceResetError.reset(let failed, _) = error else { return false }
            return failed == address && "\(error)".contains("offers no pm reset")
        }
        #expect(approvals == 0)
    }

    @Test func theApprovalSeesTheDeviceBeforeAnythingIsOpened() throws {
        let address = try PCIAddress(domain: 0, bus: 1, device: 0, function: 0)
        var seen: [AffectedDevice] = []
        #expect(throws: Refused()) {
            _ = try DeviceReset.perform(address, requested: nil, offered: ["flr"], group: 7, backend: .type1,
                                        sysfsRoot: "/nonexistent", devVFIO: "/nonexistent") { affected in
                seen = affected
                throw Refused()
            }
        }
        #expect(seen == [AffectedDevice(address: address, group: 7)])
    }
}
