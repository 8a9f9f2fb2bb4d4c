import Foundation
import SysfsFixtures
import Testing
@testable import PCIBinding
@testable import PCIInventory

/// The GPU workstation as many real boards have it: the GPU on its host driver and its HDMI audio
/// function in an IOMMU group of its own (the GPU reports ACS, so the kernel splits the slot).
enum SplitSlotHost {
    static let audioGroup = 30

    static var fixture: FixtureHost {
        var host = FixtureHost.gpuWorkstation
        for index in host.devices.indices {
            switch host.devices[index].address {
            case GPUWorkstation.gpu:
                host.devices[index].driver = "nouveau"
                host.devices[index].driverOverride = nil
            case GPUWorkstation.gpuAudio:
                host.devices[index].driver = "snd_hda_intel"
                host.devices[index].driverOverride = nil
                host.devices[index].iommuGroup = audioGroup
            default: break
            }
        }
        return host
    }
}

@Suite struct SlotBindingTests {
    let gpu = try! PCIAddress(parsing: GPUWorkstation.gpu.description)
    let audio = try! PCIAddress(parsing: GPUWorkstation.gpuAudio.description)

    @Test func companionsAreTheOtherFunctionsOfTheSlotOnly() throws {
        let tree = try TemporarySysfsTree.create(SplitSlotHost.fixture)
        defer { try? tree.remove() }
        let inventory = try PCIInventory.scan(root: SysfsRoot(path: tree.rootPath), detail: .full)
        #expect(inventory.companions(of: gpu).map(\.address) == [audio])
        #expect(inventory.companions(of: audio).map(\.address) == [gpu])
        // VFs share a slot number but are not companions; a single-function device has none.
        let vf = try PCIAddress(parsing: GPUWorkstation.sriovVirtualFunctions[0].description)
        #expect(inventory.companions(of: vf).isEmpty)
        #expect(inventory.companions(of: try PCIAddress(parsing: GPUWorkstation.nvme.description)).isEmpty)
        let gpuGroup = try #require(inventory.group(GPUWorkstation.Group.gpu))
        #expect(inventory.companionsOutside(gpuGroup).map(\.address) == [audio])
        // The chipset's functions share one group: none sits elsewhere.
        #expect(inventory.companionsOutside(try #require(inventory.group(GPUWorkstation.Group.chipset))).isEmpty)
    }

    @Test func slotPlansCoverEveryFunctionAcrossGroupsAndRefuseAsOne() throws {
        let tree = try TemporarySysfsTree.create(SplitSlotHost.fixture)
        defer { try? tree.remove() }
        let inventory = try PCIInventory.scan(root: SysfsRoot(path: tree.rootPath), detail: .full)
        var facts = HostFacts()
        let plans = try BindPlan.bindSlot(audio, wholeGroup: false, force: false, inventory: inventory, facts: facts)
        #expect(plans.map(\.group) == [GPUWorkstation.Group.gpu, SplitSlotHost.audioGroup])
        #expect(plans.flatMap(\.steps).map(\.address) == [gpu, audio])
        #expect(plans.flatMap(\.steps).map(\.action) == [.bind, .bind])
        // One held function refuses the whole slot.
        facts.holders = [audio: [Holder(pid: 812, command: "pipewire", what: "/dev/snd/controlC1 (char 116:9) open as fd 30")]]
        let held = try BindPlan.bindSlot(gpu, wholeGroup: false, force: false, inventory: inventory, facts: facts)
        #expect(held.contains { $0.isRefused })
        let binder = Binder(root: SysfsRoot(path: tree.rootPath), journal: BindingJournal(directory: tree.rootPath + "-state"))
        #expect(throws: BindingError.self) { _ = try binder.apply(held) }
        #expect(!FileManager.default.fileExists(atPath: tree.rootPath + "-state/journal.json"))
    }

    @Test func theCLINamesCompanionsAndRefusesTheSlotAsOne() throws {
        let tree = try TemporarySysfsTree.create(SplitSlotHost.fixture)
        defer { try? tree.remove() }
        let show = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "show", gpu.description])
        #expect(show.stdout.contains("Companion:       \(audio) Audio device, "), "\(show.stdout)")
        #expect(show.stdout.contains("driver snd_hda_intel, group \(SplitSlotHost.audioGroup)"))
        let groups = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "groups"])
        #expect(groups.stdout.contains("companion in group \(SplitSlotHost.audioGroup): \(audio) (snd_hda_intel)"), "\(groups.stdout)")
        try HostEnvironment.writeMountTable(procRoot: tree.rootPath + "-proc")
        defer { try? FileManager.default.removeItem(atPath: tree.rootPath + "-proc") }
        let dry = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "bind", gpu.description, "--slot", "--dry-run",
                                         "--proc-root", tree.rootPath + "-proc", "--state-dir", tree.rootPath + "-state"])
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stdout.contains("\(gpu): would-bind (nouveau -> vfio-pci)") && dry.stdout.contains("\(audio): would-bind (snd_hda_intel -> vfio-pci)"), "\(dry.stdout)")
        let doctor = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "doctor", "--json", "--proc-root", tree.rootPath + "/none"])
        #expect(doctor.stdout.contains("vfioctl bind \(gpu) --slot"), "\(doctor.stdout)")
        #expect(doctor.stdout.contains("companion functions: \(audio) (snd_hda_intel, group \(SplitSlotHost.audioGroup))"))
    }

    @Test func resetRefusesAMethodTheDeviceLacksBeforeOpeningAnything() throws {
        let tree = try TemporarySysfsTree.create(SplitSlotHost.fixture)
        defer { try? tree.remove() }
        let nvme = GPUWorkstation.nvme.description
        let wrong = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "reset", nvme, "--method", "pm"])
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("offers no pm reset"), "\(wrong.stderr)")
        let unknown = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "reset", nvme, "--method", "warm"])
        #expect(unknown.status == 64)
    }
}
