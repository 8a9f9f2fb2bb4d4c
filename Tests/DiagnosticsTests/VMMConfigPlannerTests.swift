@testable import Diagnostics
import Foundation
import PCIInventory
import SysfsFixtures
import Testing
@testable import VMMConfig

/// Plans on generated hosts: the doctor's fixture host (a sysfs tree plus a `HostEnvironment`,
/// read by the real `HostReadinessReader`), planned by `VMMConfigPlanner`.
enum PlannerFixture {
    static func plan(_ request: VMMConfigRequest) throws -> Result<VMMConfigPlan, VMMConfigRefusal> {
        try plan(.gpuWorkstation, .ready, request)
    }

    static func plan(_ environment: HostEnvironment, _ request: VMMConfigRequest) throws -> Result<VMMConfigPlan, VMMConfigRefusal> {
        try plan(.gpuWorkstation, environment, request)
    }

    static func plan(_ fixture: FixtureHost, _ environment: HostEnvironment,
                     _ request: VMMConfigRequest) throws -> Result<VMMConfigPlan, VMMConfigRefusal> {
        let host = try DoctorFixture.examine(fixture, environment).host
        do throws(VMMConfigRefusal) {
            return .success(try VMMConfigPlanner.plan(request, host: host))
        } catch {
            return .failure(error)
        }
    }

    static func request(_ address: FixtureAddress, _ scope: VMMConfigRequest.Scope = .device, memory: UInt64 = 8 << 30,
                        romFile: String? = nil, firstGuestSlot: UInt8 = VMMConfigRequest.defaultFirstGuestSlot) throws -> VMMConfigRequest {
        VMMConfigRequest(address: try PCIAddress(parsing: address.description), scope: scope, guestMemory: memory,
                         romFile: romFile, firstGuestSlot: firstGuestSlot)
    }

    /// The workstation with some devices moved to another driver (nil: no driver).
    static func workstation(_ drivers: [FixtureAddress: String?]) -> FixtureHost {
        var host = FixtureHost.gpuWorkstation
        host.devices = host.devices.map { device in
            var device = device
            if let driver = drivers[device.address] { device.driver = driver }
            return device
        }
        return host
    }

    /// No huge pages reserved, so the arguments show only the devices and RAM.
    static var noHugePages: HostEnvironment {
        var environment = HostEnvironment.ready
        environment.hugePages = [HostEnvironment.HugePagePool(sizeKiB: 2048, total: 0, free: 0)]
        return environment
    }
}

extension Result {
    var plan: Success? { if case .success(let value) = self { value } else { nil } }
    var refusal: Failure? { if case .failure(let value) = self { value } else { nil } }
}

@Suite("vm config planner on fixture hosts")
struct VMMConfigPlannerTests {
    typealias Fixture = PlannerFixture

    // MARK: what each VMM gets

    @Test func gpuSlotIsOneMultifunctionGuestSlot() throws {
        let plan = try #require(try Fixture.plan(Fixture.noHugePages, Fixture.request(GPUWorkstation.gpu, .slot)).plan)
        #expect(plan.group == GPUWorkstation.Group.gpu)
        #expect(plan.devices.map(\.address.description) == ["0000:01:00.0", "0000:01:00.1"])
        // The GPU has a ROM and keeps it; its audio function has none, so no ROM BAR in the guest.
        #expect(plan.qemuArguments == [
            "-m", "8G",
            "-device", "vfio-pci,host=0000:01:00.0,addr=0x10.0,multifunction=on",
            "-device", "vfio-pci,host=0000:01:00.1,addr=0x10.1,rombar=0",
        ])
        #expect(plan.libvirtDevices == """
            <hostdev mode='subsystem' type='pci' managed='no'>
              <source>
                <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
              </source>
              <address type='pci' domain='0x0000' bus='0x00' slot='0x10' function='0x0' multifunction='on'/>
            </hostdev>
            <hostdev mode='subsystem' type='pci' managed='no'>
              <source>
                <address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/>
              </source>
              <rom bar='off'/>
              <address type='pci' domain='0x0000' bus='0x00' slot='0x10' function='0x1'/>
            </hostdev>
            """)
        #expect(plan.cloudHypervisorArguments == [
            "--memory", "size=8G", "--device",
            "path=/sys/bus/pci/devices/0000:01:00.0/", "path=/sys/bus/pci/devices/0000:01:00.1/",
        ])
        #expect(plan.notes.isEmpty)
    }

    @Test func groupScopeGivesTheSameAsSlotForTheGPU() throws {
        let slot = try #require(try Fixture.plan(Fixture.noHugePages, Fixture.request(GPUWorkstation.gpuAudio, .slot)).plan)
        let group = try #require(try Fixture.plan(Fixture.noHugePages, Fixture.request(GPUWorkstation.gpuAudio, .group)).plan)
        #expect(slot.qemuArguments == group.qemuArguments)
        #expect(group.devices.map(\.guestSlot) == [0x10, 0x10])
    }

    @Test func deviceScopeLeavesPlacementToTheVMM() throws {
        let plan = try #require(try Fixture.plan(Fixture.noHugePages, Fixture.request(GPUWorkstation.gpu)).plan)
        #expect(plan.qemuArguments == ["-m", "8G", "-device", "vfio-pci,host=0000:01:00.0"])
        #expect(!plan.libvirtDevices.contains("<address type="), "no guest address for a lone device")
        #expect(plan.devices.first?.rom == .device)
    }

    @Test func nvmeWithoutROMGetsRombarOff() throws {
        let host = Fixture.workstation([GPUWorkstation.nvme: "vfio-pci"])
        let plan = try #require(try Fixture.plan(host, Fixture.noHugePages, Fixture.request(GPUWorkstation.nvme, memory: 256 << 20)).plan)
        #expect(plan.qemuArguments == ["-m", "256M", "-device", "vfio-pci,host=0000:02:00.0,rombar=0"])
        #expect(plan.devices.first?.rom == .off(reason: "no expansion ROM in sysfs"))
        #expect(plan.libvirtDevices.contains("<rom bar='off'/>"))
        #expect(plan.libvirtDomain == "<memory unit='KiB'>262144</memory>")
    }

    @Test func romFileReplacesTheDevicesROM() throws {
        let plan = try #require(try Fixture.plan(Fixture.noHugePages, Fixture.request(GPUWorkstation.gpu, .slot, romFile: "/var/lib/vfioctl/gpu.rom")).plan)
        #expect(plan.qemuArguments.contains("vfio-pci,host=0000:01:00.0,addr=0x10.0,multifunction=on,romfile=/var/lib/vfioctl/gpu.rom"))
        #expect(plan.libvirtDevices.contains("<rom file='/var/lib/vfioctl/gpu.rom'/>"))
        // Only the named device takes the file.
        #expect(plan.devices.map(\.rom) == [.file("/var/lib/vfioctl/gpu.rom"), .off(reason: "no expansion ROM in sysfs")])
    }

    @Test func romPathsThatNeedQuotingAreRejected() {
        #expect(VMMConfigPlan.isSafeROMPath("/srv/roms/TU102_v1.2+fix.rom"))
        for bad in ["gpu.rom", "/a,b.rom", "/a b.rom", "/a'b.rom", "/x/../etc/shadow", "/a<b", "/ümlaut.rom", "/a$(x)"] {
            #expect(!VMMConfigPlan.isSafeROMPath(bad), "\(bad)")
        }
    }

    @Test func bootDisplayGetsLegacyVGAAndNoEmulatedDisplay() throws {
        var host = Fixture.workstation([GPUWorkstation.integratedGraphics: "vfio-pci"])
        let noROM = try #require(try Fixture.plan(host, Fixture.noHugePages, Fixture.request(GPUWorkstation.integratedGraphics)).plan)
        #expect(noROM.qemuArguments == ["-m", "8G", "-device", "vfio-pci,host=0000:00:02.0,x-vga=on,rombar=0", "-vga", "none", "-display", "none"])
        // With a ROM BAR of its own, the boot display keeps it, with a caveat.
        host.devices = host.devices.map { device in
            var device = device
            if device.address == GPUWorkstation.integratedGraphics { device.rom = FixtureROM(start: 0xdf20_0000, size: 128 << 10) }
            return device
        }
        let plan = try #require(try Fixture.plan(host, Fixture.noHugePages, Fixture.request(GPUWorkstation.integratedGraphics)).plan)
        #expect(plan.qemuArguments == ["-m", "8G", "-device", "vfio-pci,host=0000:00:02.0,x-vga=on", "-vga", "none", "-display", "none"])
        #expect(plan.libvirtDevices.contains("<alias name='ua-vfioctl-0000-00-02.0'/>"))
        #expect(plan.libvirtDevices.hasSuffix("<video>\n  <model type='none'/>\n</video>"))
        #expect(plan.libvirtDomain.contains("<qemu:device alias='ua-vfioctl-0000-00-02.0'>"))
        #expect(plan.libvirtDomain.contains("<qemu:property name='x-vga' type='bool' value='true'/>"))
        #expect(plan.notes.contains { $0.contains("shadowed copy") && $0.contains("--rom-file") })
        #expect(plan.notes.contains { $0.contains("CONFIG_VFIO_PCI_VGA") })
    }

    @Test func reservedHugePagesBackGuestRAM() throws {
        let plan = try #require(try Fixture.plan(.gpuWorkstation, .ready, Fixture.request(GPUWorkstation.gpu)).plan)
        #expect(plan.hugePages)
        #expect(Array(plan.qemuArguments.prefix(5)) == ["-m", "8G", "-mem-path", "/dev/hugepages", "-mem-prealloc"])
        #expect(plan.libvirtDomain.contains("<memoryBacking>\n  <hugepages/>\n</memoryBacking>"))
        #expect(plan.cloudHypervisorArguments.prefix(2) == ["--memory", "size=8G,hugepages=on"])
    }

    // MARK: host requirements come from the doctor's rules

    @Test func memlockBelowGuestRAMIsAWarningWithTheFix() throws {
        var environment = Fixture.noHugePages
        environment.memlock = .bytes(64 << 20)
        let plan = try #require(try Fixture.plan(.gpuWorkstation, environment, Fixture.request(GPUWorkstation.gpu, memory: 4 << 30)).plan)
        let memlock = try #require(plan.host.first { $0.id == "memory.memlock" })
        #expect(memlock.status == .warning)
        #expect(memlock.evidence == ["memlock limit 64 MiB; a VM with 4 GiB of RAM pins all of it for DMA"])
        #expect(memlock.remedy?.contains("ulimit -l") == true)
        // The huge-page remedy is sized for this VM: 4 GiB is 2048 pages of 2 MiB.
        let hugePages = try #require(plan.host.first { $0.id == "memory.hugepages" })
        #expect(hugePages.remedy?.contains("echo 2048 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages") == true)
        #expect(!plan.hugePages && !plan.qemuArguments.contains("-mem-path"))
    }

    @Test func memlockAboveGuestRAMIsOK() throws {
        var environment = Fixture.noHugePages
        environment.memlock = .bytes(16 << 30)
        let plan = try #require(try Fixture.plan(.gpuWorkstation, environment, Fixture.request(GPUWorkstation.gpu, memory: 8 << 30)).plan)
        #expect(plan.host.first { $0.id == "memory.memlock" }?.status == .ok)
    }

    // MARK: refusals say what to bind first

    @Test func groupOnAHostDriverIsRefusedWithTheBindCommand() throws {
        let refusal = try #require(try Fixture.plan(Fixture.request(GPUWorkstation.nvme)).refusal)
        #expect(refusal.reason.hasPrefix("IOMMU group \(GPUWorkstation.Group.nvme) not viable: 0000:02:00.0 bound to host driver nvme"))
        #expect(refusal.bindFirst == ["vfioctl bind 0000:02:00.0"])
    }

    @Test func bootDisplayOnItsDriverNeedsAForcedBind() throws {
        let refusal = try #require(try Fixture.plan(Fixture.request(GPUWorkstation.integratedGraphics)).refusal)
        #expect(refusal.bindFirst == ["vfioctl bind 0000:00:02.0 --force"])
    }

    @Test func sharedGroupIsBoundWhole() throws {
        // The GPU's audio function back on its host driver: the GPU's group is not viable.
        let host = Fixture.workstation([GPUWorkstation.gpuAudio: "snd_hda_intel"])
        let refusal = try #require(try Fixture.plan(host, .ready, Fixture.request(GPUWorkstation.gpu, .slot)).refusal)
        #expect(refusal.reason.contains("0000:01:00.1 bound to host driver snd_hda_intel"))
        #expect(refusal.bindFirst == ["vfioctl bind 0000:01:00.1 --group"])
        #expect(refusal.description.hasSuffix("bind first: vfioctl bind 0000:01:00.1 --group"))
    }

    @Test func viableGroupWithAMemberOffVFIOIsRefusedForThatMember() throws {
        // Behind the switch: USB on vfio-pci, SATA on pci-stub (viable, but QEMU cannot open it).
        let usb = try #require(try Fixture.plan(Fixture.noHugePages, Fixture.request(GPUWorkstation.usbBehindSwitch)).plan)
        #expect(usb.qemuArguments == ["-m", "8G", "-device", "vfio-pci,host=0000:06:00.0,rombar=0"])
        let group = try #require(try Fixture.plan(Fixture.request(GPUWorkstation.usbBehindSwitch, .group)).refusal)
        #expect(group.reason == "0000:07:00.0 is bound to pci-stub, not vfio-pci: a VMM opens devices through vfio-pci")
        #expect(group.bindFirst == ["vfioctl bind 0000:07:00.0 --group"])
    }

    @Test func groupScopeTakesEndpointsOfEverySlotAndLeavesBridges() throws {
        let host = Fixture.workstation([GPUWorkstation.sataBehindSwitch: "vfio-pci"])
        let plan = try #require(try Fixture.plan(host, Fixture.noHugePages, Fixture.request(GPUWorkstation.sataBehindSwitch, .group)).plan)
        #expect(plan.qemuArguments == [
            "-m", "8G",
            "-device", "vfio-pci,host=0000:06:00.0,addr=0x10.0,rombar=0",
            "-device", "vfio-pci,host=0000:07:00.0,addr=0x11.0,rombar=0",
        ])
        #expect(plan.leftOnHost.map(\.address.description) == ["0000:05:08.0", "0000:05:10.0"])
        #expect(plan.leftOnHost.allSatisfy { $0.reason == "bridge (pcieport): stays with the host" })
        // Slots that do not fit below 0x20 are refused rather than wrapped.
        let refusal = try #require(try Fixture.plan(host, .ready, Fixture.request(GPUWorkstation.sataBehindSwitch, .group, firstGuestSlot: 0x1f)).refusal)
        #expect(refusal.reason.contains("choose --guest-slot 0x1e or lower"))
    }

    @Test func unboundDeviceInAViableGroupIsRefused() throws {
        let host = Fixture.workstation([GPUWorkstation.gpu: String?.none])
        let refusal = try #require(try Fixture.plan(host, .ready, Fixture.request(GPUWorkstation.gpu)).refusal)
        #expect(refusal.reason.hasPrefix("0000:01:00.0 is bound to no driver, not vfio-pci"))
        #expect(refusal.bindFirst == ["vfioctl bind 0000:01:00.0 --group"])
    }

    @Test func bridgesAndUnknownDevicesAreRefused() throws {
        let bridge = try #require(try Fixture.plan(Fixture.request(GPUWorkstation.pegRootPort)).refusal)
        #expect(bridge.reason.contains("is a bridge") && bridge.bindFirst.isEmpty)
        let unknown = try #require(try Fixture.plan(Fixture.request(FixtureAddress(bus: 0x42, device: 0))).refusal)
        #expect(unknown.reason.hasPrefix("no PCI device 0000:42:00.0"))
    }

    @Test func sizesUseTheLargestExactUnit() {
        #expect(VMMConfigPlan.sizeText(256 << 20) == "256M")
        #expect(VMMConfigPlan.sizeText(3 << 30) == "3G")
        #expect(VMMConfigPlan.sizeText(1536 << 20) == "1536M")
        #expect(VMMConfigPlan.sizeText(2 << 40) == "2T")
        #expect(VMMConfigPlan.sizeText(1000) == "1000B")
    }
}
