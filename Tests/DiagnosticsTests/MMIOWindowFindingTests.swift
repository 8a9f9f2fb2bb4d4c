@testable import Diagnostics
import PCIInventory
import SysfsFixtures
import Testing
@testable import VMMConfig

/// The guest MMIO window as doctor and vm config show it, on the workstation fixture: its GPU is
/// an RTX 3090 (24 GiB), with BAR1 at 256 MiB as shipped and at 32 GiB after a ReBAR resize.
@Suite("guest MMIO window in doctor and vm config")
struct MMIOWindowFindingTests {
    /// The workstation with the GPU's BAR1 resized to `size`.
    static func workstation(gpuBAR1 size: UInt64) -> FixtureHost {
        var host = FixtureHost.gpuWorkstation
        host.devices = host.devices.map { device in
            guard device.address == GPUWorkstation.gpu else { return device }
            var device = device
            device.bars = device.bars.map { $0.index == 1 ? .memory64(1, start: 0x80_0000_0000, size: size, prefetchable: true) : $0 }
            return device
        }
        return host
    }

    static func environment(bits: Int?) -> HostEnvironment {
        var environment = HostEnvironment.ready
        environment.physicalAddressBits = bits
        return environment
    }

    @Test func shippedWorkstationGPUFitsTheDefaultWindow() throws {
        let examined = try DoctorFixture.examine(.gpuWorkstation, Self.environment(bits: 39))
        #expect(examined.host.physicalAddressBits == 39)
        let finding = try #require(examined.finding("vm.mmio-window"))
        #expect(finding.status == .ok)
        #expect(finding.evidence.first?.contains("\(GPUWorkstation.gpu) BAR 1: 256 MiB") == true)
    }

    @Test func resizedGPUNeedsTheOVMFWindowInDoctorAndVMConfig() throws {
        let fixture = Self.workstation(gpuBAR1: 32 << 30)
        let examined = try DoctorFixture.examine(fixture, Self.environment(bits: 39), vmMemory: 16 << 30)
        let finding = try #require(examined.finding("vm.mmio-window"))
        #expect(finding.status == .warning)
        // 32 GiB + 32 MiB: 33 GiB + 1 GiB headroom = 34816 MiB.
        #expect(finding.remedy?.contains("-fw_cfg name=opt/ovmf/X-PciMmio64Mb,string=34816") == true)
        #expect(finding.remedy?.contains("phys-bits") == false)
        #expect(finding.evidence.contains { $0.hasPrefix("OVMF 2022.11") && $0.contains("BARs left unassigned") })

        // vm config for the GPU's slot prints the same finding and puts the knob in QEMU's line.
        let request = try PlannerFixture.request(GPUWorkstation.gpu, .slot, memory: 16 << 30)
        let plan = try #require(try PlannerFixture.plan(fixture, Self.environment(bits: 39), request).plan)
        // Doctor counts every device on vfio-pci (the VFs too), vm config the GPU's slot: the same
        // verdict and settings.
        let planned = try #require(plan.host.first { $0.id == "vm.mmio-window" })
        #expect(planned.status == finding.status)
        #expect(planned.remedy == finding.remedy)
        #expect(planned.evidence.first?.contains("08:02.1") == false)
        #expect(plan.qemuArguments.suffix(2) == ["-fw_cfg", "name=opt/ovmf/X-PciMmio64Mb,string=34816"])
        #expect(plan.libvirtDomain.contains("<entry name='opt/ovmf/X-PciMmio64Mb'>34816</entry>"))
    }

    @Test func hostWithTooFewAddressBitsIsAProblem() throws {
        // A 512 GiB BAR: the window (514 GiB) is based at 512 GiB and ends past 1 TiB: 41 bits,
        // past a 39-bit host's reach whatever the RAM.
        let fixture = Self.workstation(gpuBAR1: 512 << 30)
        let examined = try DoctorFixture.examine(fixture, Self.environment(bits: 39))
        let finding = try #require(examined.finding("vm.mmio-window"))
        #expect(finding.status == .problem)
        #expect(finding.title == "No guest on this host can hold these BARs")
        let roomy = try DoctorFixture.examine(fixture, Self.environment(bits: 46))
        #expect(roomy.finding("vm.mmio-window")?.status == .warning)
        #expect(roomy.finding("vm.mmio-window")?.remedy?.contains("phys-bits=41") == true)
    }

    @Test func noVFIODeviceWithA64BitBARGivesNoFinding() throws {
        let examined = try DoctorFixture.examine(DoctorFixture.beforeBinding, Self.environment(bits: 39))
        #expect(examined.finding("vm.mmio-window") == nil)
    }

    @Test func cpuinfoAddressSizes() {
        #expect(HostReadinessReader.physicalAddressBits(cpuinfo: "processor\t: 0\naddress sizes\t: 46 bits physical, 57 bits virtual\n") == 46)
        #expect(HostReadinessReader.physicalAddressBits(cpuinfo: "address sizes\t: 99 bits physical, 48 bits virtual\n") == nil)
        #expect(HostReadinessReader.physicalAddressBits(cpuinfo: "address sizes\t: bits\n") == nil)
        #expect(HostReadinessReader.physicalAddressBits(cpuinfo: "processor\t: 0\n") == nil)
    }
}
