@testable import Diagnostics
import Foundation
import PCIInventory
import SysfsFixtures
import Testing
@testable import VMMConfig

/// `vm config` with several addresses: one VM, one -m, slots that do not clash, each device once.
@Suite("vm config planner with several devices")
struct VMMConfigMultiDeviceTests {
    typealias Fixture = PlannerFixture

    func request(_ addresses: [FixtureAddress], _ scope: VMMConfigRequest.Scope) throws -> VMMConfigRequest {
        var request = try Fixture.request(addresses[0], scope)
        request.moreAddresses = try addresses.dropFirst().map { try PCIAddress(parsing: $0.description) }
        return request
    }

    @Test func severalDevicesOneMemoryAndSlotsAcrossAll() throws {
        let host = Fixture.workstation([GPUWorkstation.sataBehindSwitch: "vfio-pci"])
        let plan = try #require(try Fixture.plan(host, Fixture.noHugePages, request([GPUWorkstation.gpu, GPUWorkstation.sataBehindSwitch], .slot)).plan)
        #expect(plan.qemuArguments == [
            "-m", "8G",
            "-device", "vfio-pci,host=0000:01:00.0,addr=0x10.0,multifunction=on",
            "-device", "vfio-pci,host=0000:01:00.1,addr=0x10.1,rombar=0",
            "-device", "vfio-pci,host=0000:07:00.0,addr=0x11.0,rombar=0",
        ])
        #expect(plan.qemuArguments.filter { $0 == "-m" }.count == 1)
        #expect(plan.libvirtDomain.components(separatedBy: "<memory ").count == 2)
        #expect(plan.groups.count == 2 && plan.group == GPUWorkstation.Group.gpu)
        #expect(plan.notes.isEmpty)
    }

    @Test func deviceScopeLeavesEverySlotToTheVMM() throws {
        let host = Fixture.workstation([GPUWorkstation.sataBehindSwitch: "vfio-pci"])
        let plan = try #require(try Fixture.plan(host, Fixture.noHugePages, request([GPUWorkstation.gpu, GPUWorkstation.sataBehindSwitch], .device)).plan)
        #expect(plan.devices.map(\.address.description) == ["0000:01:00.0", "0000:07:00.0"])
        #expect(plan.devices.allSatisfy { $0.guestSlot == nil })
    }

    @Test func anAddressTwiceOrInsideAnothersGroupIsCountedOnce() throws {
        let plan = try #require(try Fixture.plan(Fixture.noHugePages, request([GPUWorkstation.gpu, GPUWorkstation.gpuAudio, GPUWorkstation.gpu, GPUWorkstation.gpuAudio], .group)).plan)
        #expect(plan.devices.map(\.address.description) == ["0000:01:00.0", "0000:01:00.1"])
        #expect(plan.notes == [
            "0000:01:00.1 is already in the VM with 0000:01:00.0 (--group): counted once",
            "0000:01:00.0 is named more than once: counted once",
        ])
        let same = try #require(try Fixture.plan(Fixture.noHugePages, request([GPUWorkstation.gpu, GPUWorkstation.gpu], .device)).plan)
        #expect(same.qemuArguments == ["-m", "8G", "-device", "vfio-pci,host=0000:01:00.0"])
        #expect(same.notes == ["0000:01:00.0 is named more than once: counted once"])
    }

    @Test func oneRefusedDeviceRefusesTheVM() throws {
        let refusal = try #require(try Fixture.plan(Fixture.request(GPUWorkstation.gpu)).plan.map { _ in
            try Fixture.plan(.ready, request([GPUWorkstation.gpu, GPUWorkstation.nvme], .device)).refusal
        } ?? nil)
        #expect(refusal.reason.contains("0000:"), "\(refusal)")
    }
}
