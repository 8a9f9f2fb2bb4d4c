@testable import Diagnostics
import Foundation
import PCIInventory
import SysfsFixtures
import Testing
import VFIO
@testable import VMMConfig

/// `vm config --backend`: the rule in VMMConfigPlanner, on the GPU workstation with /dev/iommu
/// and the GPU's functions' VFIO device files present or not.
@Suite("vm config: type1 and iommufd forms")
struct VMMConfigBackendTests {
    typealias Fixture = PlannerFixture

    /// The workstation where each address in `files` has that device file; `iommufd`: /dev/iommu.
    static func plan(iommufd: Bool, files: [FixtureAddress: String], backend: VFIOBackendRequest,
                     scope: VMMConfigRequest.Scope = .slot, qemu: String? = nil, kernel: String? = nil,
                     includesQEMU: Bool = true) throws -> Result<VMMConfigPlan, VMMConfigRefusal> {
        var fixture = FixtureHost.gpuWorkstation
        fixture.devices = fixture.devices.map { device in
            var device = device
            device.vfioDeviceFile = files[device.address]
            return device
        }
        var environment = Fixture.noHugePages
        environment.iommufdNode = iommufd
        if let kernel { environment.kernelRelease = kernel }
        var host = try DoctorFixture.examine(fixture, environment).host
        host.qemuVersion = qemu
        var request = try Fixture.request(GPUWorkstation.gpu, scope)
        request.backend = backend
        request.includesQEMU = includesQEMU
        do throws(VMMConfigRefusal) {
            return .success(try VMMConfigPlanner.plan(request, host: host))
        } catch {
            return .failure(error)
        }
    }

    static let bothFiles: [FixtureAddress: String] = [GPUWorkstation.gpu: "vfio0", GPUWorkstation.gpuAudio: "vfio1"]

    @Test("iommufd everywhere: auto takes it; QEMU gets one iommufd object and iommufd= on each device")
    func iommufdForms() throws {
        for backend in [VFIOBackendRequest.auto, .iommufd] {
            let plan = try #require(try Self.plan(iommufd: true, files: Self.bothFiles, backend: backend, qemu: "10.0.2").plan)
            #expect(plan.backend == .iommufd)
            #expect(plan.iommufdUnavailable == nil)
            #expect(plan.devices.map(\.deviceFile) == ["vfio0", "vfio1"])
            #expect(plan.qemuArguments == [
                "-m", "8G",
                "-object", "iommufd,id=iommufd0",
                "-device", "vfio-pci,host=0000:01:00.0,iommufd=iommufd0,addr=0x10.0,multifunction=on",
                "-device", "vfio-pci,host=0000:01:00.1,iommufd=iommufd0,addr=0x10.1,rombar=0",
            ])
            #expect(plan.libvirtDevices.components(separatedBy: "<driver iommufd='yes'/>").count == 3)
            #expect(plan.cloudHypervisorArguments.starts(with: ["--memory", "size=8G", "--platform", "iommufd=on", "--device"]))
            // The type1 form stays available beside it.
            #expect(!plan.qemuArguments(for: .type1).contains { $0.contains("iommufd") })
            #expect(!plan.libvirtDevices(for: .type1).contains("iommufd"))
            #expect(!plan.cloudHypervisorArguments(for: .type1).contains("--platform"))
            let notes = plan.notes.joined(separator: "\n")
            for needed in ["QEMU 8.2", "10.0.2", "RLIMIT_MEMLOCK", "CAP_IPC_LOCK", "libvirt", "untested", "Linux 6.19"] {
                #expect(notes.contains(needed), "\(needed) missing from: \(notes)")
            }
        }
    }

    @Test("dma-buf peer-to-peer note only for several devices on a kernel before 6.19")
    func dmabufNote() throws {
        let new = try #require(try Self.plan(iommufd: true, files: Self.bothFiles, backend: .iommufd, kernel: "7.3.4-vfioctl-iommufd").plan)
        #expect(!new.notes.contains { $0.contains("6.19") })
        let old = try #require(try Self.plan(iommufd: true, files: Self.bothFiles, backend: .iommufd, kernel: "6.12.95+deb12-amd64").plan)
        #expect(old.notes.contains { $0.contains("Linux 6.19") && $0.contains("6.12.95") })
        let one = try #require(try Self.plan(iommufd: true, files: Self.bothFiles, backend: .iommufd, scope: .device, kernel: "6.12.95").plan)
        #expect(!one.notes.contains { $0.contains("6.19") })
    }

    @Test("no /dev/iommu: auto takes type1 silently; iommufd is refused naming CONFIG_IOMMUFD")
    func noIOMMUFD() throws {
        let auto = try #require(try Self.plan(iommufd: false, files: [:], backend: .auto).plan)
        #expect(auto.backend == .type1)
        #expect(auto.qemuArguments == ["-m", "8G", "-device", "vfio-pci,host=0000:01:00.0,addr=0x10.0,multifunction=on",
                                       "-device", "vfio-pci,host=0000:01:00.1,addr=0x10.1,rombar=0"])
        #expect(auto.iommufdUnavailable?.contains("CONFIG_IOMMUFD") == true)
        #expect(!auto.notes.contains { $0.contains("auto took") })
        let refused = try #require(try Self.plan(iommufd: false, files: Self.bothFiles, backend: .iommufd).refusal)
        #expect(refused.reason.contains("/dev/iommu") && refused.reason.contains("CONFIG_IOMMUFD"), "\(refused)")
        // type1 asked for: type1, whatever the host has.
        let type1 = try #require(try Self.plan(iommufd: true, files: Self.bothFiles, backend: .type1).plan)
        #expect(type1.backend == .type1 && type1.iommufdUnavailable == nil)
    }

    @Test("device files missing: iommufd is refused naming the device and CONFIG_VFIO_DEVICE_CDEV; auto takes type1 and says why")
    func missingDeviceFiles() throws {
        let refused = try #require(try Self.plan(iommufd: true, files: [:], backend: .iommufd).refusal)
        #expect(refused.reason.contains("0000:01:00.0, 0000:01:00.1") && refused.reason.contains("CONFIG_VFIO_DEVICE_CDEV"), "\(refused)")
        let auto = try #require(try Self.plan(iommufd: true, files: [:], backend: .auto).plan)
        #expect(auto.backend == .type1)
        #expect(auto.notes.contains { $0.hasPrefix("auto took type1") && $0.contains("CONFIG_VFIO_DEVICE_CDEV") })
    }

    @Test("a mixed set is refused by auto and by iommufd, naming both sides")
    func mixedSet() throws {
        let files = [GPUWorkstation.gpu: "vfio0"]
        for backend in [VFIOBackendRequest.auto, .iommufd] {
            let refused = try #require(try Self.plan(iommufd: true, files: files, backend: backend).refusal, "\(backend)")
            #expect(refused.reason.contains("mixed set") && refused.reason.contains("0000:01:00.0 (vfio0)") && refused.reason.contains("0000:01:00.1"), "\(refused)")
        }
        // type1 hands both over through the group.
        #expect(try Self.plan(iommufd: true, files: files, backend: .type1).plan?.backend == .type1)
    }

    @Test("a QEMU older than 8.2: iommufd refused, auto takes type1; not when only Cloud Hypervisor's form is wanted")
    func oldQEMU() throws {
        let refused = try #require(try Self.plan(iommufd: true, files: Self.bothFiles, backend: .iommufd, qemu: "7.2.22").refusal)
        #expect(refused.reason.contains("7.2.22") && refused.reason.contains("8.2"), "\(refused)")
        let auto = try #require(try Self.plan(iommufd: true, files: Self.bothFiles, backend: .auto, qemu: "7.2.22").plan)
        #expect(auto.backend == .type1)
        let cloud = try #require(try Self.plan(iommufd: true, files: Self.bothFiles, backend: .iommufd, qemu: "7.2.22", includesQEMU: false).plan)
        #expect(cloud.backend == .iommufd)
        // An unreadable version decides nothing.
        #expect(try Self.plan(iommufd: true, files: Self.bothFiles, backend: .iommufd, qemu: nil).plan?.backend == .iommufd)
    }
}
