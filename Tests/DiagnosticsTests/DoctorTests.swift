import Testing
@testable import Diagnostics
@testable import HostKernel
@testable import PCIInventory

@Suite struct KernelVersionTests {
    @Test(arguments: [
        ("6.12.95+deb12-amd64", 6, 12, 95), ("6.18.44-fc-v657", 6, 18, 44), ("5.2", 5, 2, 0),
        ("6.15.0-rc6", 6, 15, 0), ("4.19.0-27-amd64", 4, 19, 0), ("6.1.0-37-cloud-amd64", 6, 1, 0),
    ])
    func parses(release: String, major: Int, minor: Int, patch: Int) throws {
        let version = try #require(KernelVersion(release: release))
        #expect(version.major == major && version.minor == minor && version.patch == patch)
        #expect(version.description == release)
    }

    @Test func rejectsNonVersions() {
        #expect(KernelVersion(release: "") == nil)
        #expect(KernelVersion(release: "linux") == nil)
        #expect(KernelVersion(release: "6") == nil)
    }

    @Test func hugeFaultHistory() {
        #expect(!KernelHistory.hasHugeFault(KernelVersion(6, 11, 11)))
        #expect(KernelHistory.hasHugeFault(KernelVersion(6, 12, 0)))
        #expect(KernelHistory.hugeFaultAlignment(KernelVersion(6, 11, 9)) == .notApplicable)
        for patch in 0...28 { #expect(KernelHistory.hugeFaultAlignment(KernelVersion(6, 12, patch)) == .affected) }
        for patch in [29, 30, 95] { #expect(KernelHistory.hugeFaultAlignment(KernelVersion(6, 12, patch)) == .fixed) }
        for patch in 0...12 { #expect(KernelHistory.hugeFaultAlignment(KernelVersion(6, 13, patch)) == .affected) }
        for patch in 0...6 { #expect(KernelHistory.hugeFaultAlignment(KernelVersion(6, 14, patch)) == .affected) }
        #expect(KernelHistory.hugeFaultAlignment(KernelVersion(6, 14, 7)) == .fixed)
        #expect(KernelHistory.hugeFaultAlignment(KernelVersion(6, 15, 0)) == .fixed)
        #expect(KernelHistory.hugeFaultAlignment(KernelVersion(7, 0, 0)) == .fixed)
    }

    @Test func memslotZapHistory() {
        #expect(!KernelHistory.hasMemslotZapRegression(KernelVersion(5, 0, 21)))
        for patch in 0...21 { #expect(KernelHistory.hasMemslotZapRegression(KernelVersion(5, 1, patch))) }
        for patch in 0...10 { #expect(KernelHistory.hasMemslotZapRegression(KernelVersion(5, 2, patch))) }
        #expect(!KernelHistory.hasMemslotZapRegression(KernelVersion(5, 2, 11)))
        #expect(!KernelHistory.hasMemslotZapRegression(KernelVersion(5, 3, 0)))
        #expect(!KernelHistory.hasMemslotZapRegression(KernelVersion(6, 12, 0)))
    }

}


/// Hand-built inventories for the rules: a workstation with a GPU and its audio function in one
/// group, and two endpoints behind a switch port without ACS.
enum DoctorHost {
    static func device(_ address: String, class classCode: UInt32, driver: String?, group: Int?,
                       parents: [String] = [], bootVGA: Bool? = nil, reset: [String] = [],
                       acs: ACSStatus? = nil, portType: PCIExpressPortType? = nil) throws -> PCIDevice {
        var device = PCIDevice(address: try PCIAddress(parsing: address))
        device.classCode = classCode
        device.vendorID = 0x10de
        device.deviceID = 0x2204
        device.driver = driver
        device.iommuGroup = group
        device.parentBridges = try parents.map { try PCIAddress(parsing: $0) }
        device.bootVGA = bootVGA
        device.resetMethods = reset
        device.accessControlServices = acs
        device.expressPortType = portType
        return device
    }

    static func inventory(_ devices: [PCIDevice], iommu: Bool = true) -> PCIInventory {
        var groupsByID: [Int: [PCIDevice]] = [:]
        for device in devices { if let group = device.iommuGroup { groupsByID[group, default: []].append(device) } }
        let groups = groupsByID.keys.sorted().map { id in
            let members = groupsByID[id] ?? []
            return IOMMUGroup(id: id, devices: members.map(\.address).sorted(), otherMembers: [],
                              blockers: GroupViability.blockers(members: members, otherMembers: []))
        }
        return PCIInventory(root: SysfsRoot(path: "/fixture"), devices: devices.sorted { $0.address < $1.address },
                            groups: iommu ? groups : [],
                            iommu: IOMMUStatus(units: iommu ? ["dmar0"] : [], groupCount: iommu ? groups.count : 0, kernelCommandLine: nil),
                            problems: [])
    }

    static func workstation() throws -> HostReadiness {
        let isolating = ACSStatus(supported: ACSControls(rawValue: 0x1f), enabled: ACSControls(rawValue: 0x1d))
        let devices = [
            try device("00:01.0", class: 0x060400, driver: "pcieport", group: 1, acs: isolating, portType: .rootPort),
            try device("01:00.0", class: 0x030000, driver: "nvidia", group: 2, parents: ["00:01.0"], reset: ["bus"]),
            try device("01:00.1", class: 0x040300, driver: "snd_hda_intel", group: 2, parents: ["00:01.0"]),
            try device("00:02.0", class: 0x030000, driver: "i915", group: 3, bootVGA: true, reset: ["flr"]),
            try device("00:1c.0", class: 0x060400, driver: "pcieport", group: 4, acs: isolating, portType: .rootPort),
            try device("02:00.0", class: 0x060400, driver: "pcieport", group: 5, parents: ["00:1c.0"], portType: .upstreamSwitchPort),
            try device("03:01.0", class: 0x060400, driver: "pcieport", group: 6, parents: ["02:00.0", "00:1c.0"], portType: .downstreamSwitchPort),
            try device("04:00.0", class: 0x020000, driver: "igb", group: 6, parents: ["03:01.0", "02:00.0", "00:1c.0"]),
            try device("04:00.1", class: 0x020000, driver: "vfio-pci", group: 6, parents: ["03:01.0", "02:00.0", "00:1c.0"]),
            try device("05:00.0", class: 0x010802, driver: "nvme", group: 6, parents: ["03:01.0", "02:00.0", "00:1c.0"]),
        ]
        var host = HostReadiness(inventory: inventory(devices))
        host.kernelRelease = "6.12.20-amd64"
        host.interruptRemapping = true
        host.loadedModules = ["vfio", "vfio_iommu_type1", "vfio_pci"]
        host.vfioContainerNode = true
        host.kvmNode = true
        host.kvm = KVMSummary(apiVersion: 12, maxMemslots: 32764, readonlyMemory: true, dirtyRingBytes: 65536)
        host.memlockKnown = true
        host.memlockLimit = nil
        host.hugePages = [HugePagePool(pageSize: 2 << 20, total: 4096, free: 4096)]
        return host
    }
}

@Suite struct DoctorRuleTests {
    func finding(_ findings: [Finding], _ id: String) -> Finding? { findings.first { $0.id == id } }

    @Test func gpuWithItsAudioFunctionNeedsAGroupBind() throws {
        let findings = Doctor.examine(try DoctorHost.workstation())
        let gpu = try #require(finding(findings, "gpu.0000:01:00.0"))
        #expect(gpu.remedy == "vfioctl bind 0000:01:00.0 --group")
        #expect(gpu.evidence.contains { $0.contains("0000:01:00.1 (snd_hda_intel)") })
        #expect(gpu.evidence.contains { $0.contains("reset methods: bus") })
        #expect(gpu.evidence.contains { $0.contains("blocking: 0000:01:00.0 (nvidia), 0000:01:00.1 (snd_hda_intel)") })
    }

    @Test func bootDisplayNeedsForceAndWarns() throws {
        let findings = Doctor.examine(try DoctorHost.workstation())
        let igpu = try #require(finding(findings, "gpu.0000:00:02.0"))
        #expect(igpu.status == .warning)
        #expect(igpu.remedy == "vfioctl bind 0000:00:02.0 --force")
        #expect(igpu.evidence.contains { $0.contains("boot_vga=1") })
    }

    @Test func readyGPUHasNoRemedy() throws {
        var host = try DoctorHost.workstation()
        var devices = host.inventory.devices
        for index in devices.indices where ["0000:01:00.0", "0000:01:00.1"].contains(devices[index].address.description) {
            devices[index].driver = "vfio-pci"
        }
        host.inventory = DoctorHost.inventory(devices)
        let gpu = try #require(finding(Doctor.examine(host), "gpu.0000:01:00.0"))
        #expect(gpu.status == .ok && gpu.remedy == nil)
        #expect(gpu.evidence.contains { $0.contains("ready") })
    }

    @Test func sharedGroupNamesTheBridgeWithoutACS() throws {
        let findings = Doctor.examine(try DoctorHost.workstation())
        let shared = try #require(finding(findings, "acs.group-6"))
        #expect(shared.status == .warning)
        #expect(shared.title.contains("3 devices in 2 slots"))
        #expect(shared.evidence.contains { $0.contains("0000:03:01.0") && $0.contains("no ACS capability") })
        #expect(shared.evidence.contains { $0.contains("0000:02:00.0") })
        // Root ports with isolating ACS are not blamed; the GPU's group is one slot, no finding.
        #expect(!shared.evidence.contains { $0.contains("0000:00:1c.0") })
        #expect(finding(findings, "acs.group-2") == nil)
    }

    @Test func kernelFindingsFollowTheVersion() throws {
        var host = try DoctorHost.workstation()
        #expect(finding(Doctor.examine(host), "kernel.huge-fault-alignment")?.status == .warning)
        host.kernelRelease = "6.12.95+deb12-amd64"
        #expect(finding(Doctor.examine(host), "kernel.huge-fault-alignment")?.status == .ok)
        host.kernelRelease = "5.1.16"
        let old = Doctor.examine(host)
        #expect(finding(old, "kernel.memslot-zap")?.status == .problem)
        #expect(finding(old, "kernel.huge-fault-alignment") == nil)
        #expect(finding(old, "kernel.huge-fault")?.status == .info)
    }

    @Test func noIOMMUIsAProblemWithAdvice() throws {
        var host = try DoctorHost.workstation()
        host.inventory = DoctorHost.inventory(host.inventory.devices.map { device in
            var copy = device
            copy.iommuGroup = nil
            return copy
        }, iommu: false)
        let findings = Doctor.examine(host)
        #expect(Doctor.verdict(findings) == .problem)
        let iommu = try #require(finding(findings, "iommu.enabled"))
        #expect(iommu.status == .problem)
        #expect(iommu.evidence.contains { $0.contains("intel_iommu=on") })
        #expect(finding(findings, "gpu.0000:01:00.0")?.status == .problem)
    }

    @Test func interruptRemappingAndModulesAndMemlock() throws {
        var host = try DoctorHost.workstation()
        #expect(Doctor.verdict(Doctor.examine(host)) < .problem)
        host.interruptRemapping = false
        #expect(finding(Doctor.examine(host), "iommu.interrupt-remapping")?.status == .problem)
        host.allowUnsafeInterrupts = true
        #expect(finding(Doctor.examine(host), "iommu.interrupt-remapping")?.status == .warning)

        host.loadedModules = ["vfio"]
        host.availableModules = ["vfio_iommu_type1", "vfio_pci"]
        #expect(finding(Doctor.examine(host), "vfio.modules")?.status == .warning)
        host.availableModules = []
        let missing = try #require(finding(Doctor.examine(host), "vfio.modules"))
        #expect(missing.status == .problem && missing.evidence.joined().contains("vfio_pci"))

        host.memlockLimit = 64 << 20
        host.plannedGuestMemory = 16 << 30
        let memlock = try #require(finding(Doctor.examine(host), "memory.memlock"))
        #expect(memlock.status == .warning)
        #expect(memlock.evidence.joined().contains("64 MiB") && memlock.evidence.joined().contains("16 GiB"))
        host.memlockLimit = 32 << 30
        #expect(finding(Doctor.examine(host), "memory.memlock")?.status == .ok)
    }

    @Test func kvmMissing() throws {
        var host = try DoctorHost.workstation()
        host.kvmNode = false
        host.kvm = nil
        let kvm = try #require(finding(Doctor.examine(host), "kvm"))
        #expect(kvm.status == .problem && kvm.remedy?.contains("kvm_intel") == true)
    }
}

@Suite("doctor: which VFIO backends the host has")
struct DoctorBackendTests {
    static func host(container: Bool, iommufd: Bool, deviceFiles: Bool, release: String) throws -> HostReadiness {
        var host = try DoctorHost.workstation()
        host.vfioContainerNode = container
        host.iommufdNode = iommufd
        host.vfioDeviceFiles = deviceFiles
        host.kernelRelease = release
        return host
    }

    @Test("a Debian-like kernel: type1 only, CONFIG_IOMMUFD named")
    func type1Only() throws {
        let finding = try #require(Doctor.backends(try Self.host(container: true, iommufd: false, deviceFiles: false, release: "6.12.95+deb12-amd64")).first)
        #expect(finding.id == "vfio.backends" && finding.status == .info)
        #expect(finding.title == "VFIO backends: type1")
        #expect(finding.evidence.contains("missing: CONFIG_IOMMUFD (no /dev/iommu)"))
        #expect(finding.remedy?.contains("CONFIG_IOMMUFD") == true)
    }

    @Test("both backends, dma-buf peer-to-peer from 6.19")
    func both() throws {
        let new = try #require(Doctor.backends(try Self.host(container: true, iommufd: true, deviceFiles: true, release: "7.3.4")).first)
        #expect(new.title == "VFIO backends: type1, iommufd")
        #expect(new.remedy == nil)
        #expect(new.evidence.contains { $0.hasPrefix("peer-to-peer under iommufd: BARs exported as dma-bufs") })
        let old = try #require(Doctor.backends(try Self.host(container: true, iommufd: true, deviceFiles: true, release: "6.12.95")).first)
        #expect(old.evidence.contains { $0.hasPrefix("peer-to-peer under iommufd: needs kernel 6.19") })
    }

    @Test("iommufd without device files names CONFIG_VFIO_DEVICE_CDEV; no container names CONFIG_VFIO_CONTAINER")
    func missingOptions() throws {
        // The workstation fixture has a device on vfio-pci, which would have a device file.
        let finding = try #require(Doctor.backends(try Self.host(container: false, iommufd: true, deviceFiles: false, release: "7.3.4")).first)
        #expect(finding.title == "No VFIO backend" && finding.status == .warning)
        #expect(finding.evidence.contains { $0.contains("CONFIG_VFIO_DEVICE_CDEV") })
        #expect(finding.evidence.contains { $0.contains("CONFIG_VFIO_CONTAINER") })
    }
}
