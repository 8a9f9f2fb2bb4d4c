import Foundation
import Testing
@testable import Diagnostics
import PCIInventory
import SysfsFixtures
#if canImport(Glibc)
import Glibc
#endif

/// The doctor on generated hosts: a fixture sysfs tree plus a `HostEnvironment` (proc, dev,
/// lib/modules), read by the real `HostReadinessReader` and judged by `Doctor.examine`.
enum DoctorFixture {
    struct Examined {
        let host: HostReadiness
        let findings: [Finding]

        func finding(_ id: String) -> Finding? { findings.first { $0.id == id } }
        var ids: [String] { findings.map(\.id) }
        var verdict: Finding.Status { Doctor.verdict(findings) }
    }

    static func examine(_ fixture: FixtureHost = .gpuWorkstation, _ environment: HostEnvironment = .ready,
                        vmMemory: UInt64 = 8 << 30) throws -> Examined {
        try withTemporarySysfsTree(fixture) { tree in
            let roots = try tree.writeEnvironment(environment)
            var reader = HostReadinessReader(sysfs: SysfsRoot(path: tree.rootPath))
            reader.procRoot = roots.procRoot
            reader.devRoot = roots.devRoot
            reader.modulesRoot = roots.modulesRoot
            reader.plannedGuestMemory = vmMemory
            let host = try reader.read(names: nil)
            return Examined(host: host, findings: Doctor.examine(host))
        }
    }

    /// An environment that differs from `.ready` in one way.
    static func ready(_ change: (inout HostEnvironment) -> Void) -> HostEnvironment {
        var environment = HostEnvironment.ready
        change(&environment)
        return environment
    }

    /// The workstation before its GPU was handed to vfio-pci: nouveau on the GPU, the HDMI audio
    /// on snd_hda_intel, nothing on vfio-pci at all.
    static var beforeBinding: FixtureHost {
        var host = FixtureHost.gpuWorkstation
        host.devices = host.devices.map { device in
            var device = device
            guard device.driver == "vfio-pci" else { return device }
            device.driverOverride = nil
            device.driver = switch device.classCode >> 8 {
            case 0x0300: "nouveau"
            case 0x0403: "snd_hda_intel"
            case 0x0c03: "xhci_hcd"
            default: nil
            }
            return device
        }
        return host
    }

    static let gpu = GPUWorkstation.gpu.description
    static let gpuAudio = GPUWorkstation.gpuAudio.description
    static let integratedGraphics = GPUWorkstation.integratedGraphics.description
}

@Suite("doctor on fixture hosts")
struct DoctorFixtureTests {
    typealias Fixture = DoctorFixture

    // MARK: whole hosts

    @Test func readyHostHasNoProblem() throws {
        let result = try Fixture.examine()
        #expect(result.verdict == .warning)
        #expect(!result.findings.contains { $0.status == .problem }, "\(result.findings.filter { $0.status == .problem })")
        // The facts came from the fixture, not from this machine.
        #expect(result.host.kernelRelease == HostEnvironment.ready.kernelRelease)
        #expect(result.host.memlockKnown && result.host.memlockLimit == nil)
        #expect(result.host.kvm == nil && result.host.kvmError == nil)
        for (id, status) in [("iommu.enabled", Finding.Status.ok), ("iommu.interrupt-remapping", .ok), ("vfio.modules", .ok),
                             ("vfio.container", .ok), ("kvm", .info), ("memory.memlock", .ok), ("memory.hugepages", .ok),
                             ("kernel.huge-fault", .ok), ("kernel.huge-fault-alignment", .ok), ("kernel.memslot-zap", .ok),
                             ("gpu.\(Fixture.gpu)", .ok), ("gpu.\(Fixture.integratedGraphics)", .warning)] {
            #expect(result.finding(id)?.status == status, "\(id)")
        }
        #expect(result.finding("iommu.passthrough") == nil)
    }

    @Test func noIOMMUHostIsAProblemWithAdvice() throws {
        let result = try Fixture.examine(.noIOMMU)
        #expect(result.verdict == .problem)
        let iommu = try #require(result.finding("iommu.enabled"))
        #expect(iommu.status == .problem)
        #expect(iommu.evidence.contains { $0.contains("intel_iommu=on") })
        #expect(iommu.evidence.contains { $0.contains("lists no IOMMU unit") })
        #expect(iommu.remedy?.contains("VT-d") == true)
        // Without groups, interrupt remapping and ACS are moot, and no GPU can be assigned.
        #expect(result.finding("iommu.interrupt-remapping") == nil)
        #expect(!result.ids.contains { $0.hasPrefix("acs.") })
        let gpu = try #require(result.finding("gpu.\(Fixture.gpu)"))
        #expect(gpu.status == .problem)
        #expect(gpu.evidence.contains("no IOMMU group"))
        #expect(gpu.evidence.first?.contains("driver nouveau") == true)
        #expect(gpu.remedy == "enable the IOMMU first (see iommu.enabled)")
    }

    // MARK: IOMMU

    @Test func iommuEvidenceNamesUnitGroupsAndCommandLine() throws {
        let result = try Fixture.examine()
        let iommu = try #require(result.finding("iommu.enabled"))
        #expect(iommu.evidence.contains("\(FixtureHost.gpuWorkstation.iommuGroups.count) IOMMU groups"))
        #expect(iommu.evidence.contains("IOMMU units: dmar0"))
        #expect(iommu.evidence.contains { $0.hasPrefix("kernel command line: ") && $0.hasSuffix("intel_iommu=on") })
    }

    @Test func iommuPassthroughIsNoted() throws {
        let result = try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.commandLine = ($0.commandLine ?? "") + " iommu=pt" })
        let passthrough = try #require(result.finding("iommu.passthrough"))
        #expect(passthrough.status == .info)
        #expect(passthrough.evidence == ["kernel command line has iommu=pt"])
    }

    @Test func interruptRemappingPresent() throws {
        let remapping = try #require(try Fixture.examine().finding("iommu.interrupt-remapping"))
        #expect(remapping.status == .ok)
        #expect(remapping.evidence.contains { $0.contains("IR-") })
    }

    @Test func interruptRemappingAbsent() throws {
        let absent = try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.interruptRemapping = false })
        let finding = try #require(absent.finding("iommu.interrupt-remapping"))
        #expect(finding.status == .problem)
        #expect(finding.evidence.contains("vfio_iommu_type1 refuses devices with MSI without it"))
        #expect(finding.remedy?.contains("allow_unsafe_interrupts=1") == true)
        #expect(absent.verdict == .problem)

        // allow_unsafe_interrupts=Y (read from the module's parameter in sysfs) lowers it to a warning.
        let unsafe = try Fixture.examine(.gpuWorkstation, Fixture.ready {
            $0.interruptRemapping = false
            $0.allowUnsafeInterrupts = true
        })
        #expect(unsafe.host.allowUnsafeInterrupts == true)
        #expect(unsafe.finding("iommu.interrupt-remapping")?.status == .warning)
        #expect(unsafe.finding("iommu.interrupt-remapping")?.evidence.contains { $0.contains("allow_unsafe_interrupts=Y") } == true)

        // No /proc/interrupts: nothing is known, so nothing is said.
        let unknown = try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.interruptRemapping = nil })
        #expect(unknown.host.interruptRemapping == nil)
        #expect(unknown.finding("iommu.interrupt-remapping") == nil)
    }

    // MARK: modules and /dev/vfio

    @Test func modulesLoaded() throws {
        let modules = try #require(try Fixture.examine().finding("vfio.modules"))
        #expect(modules.status == .ok)
        #expect(modules.evidence == ["/sys/module/vfio", "/sys/module/vfio_iommu_type1", "/sys/module/vfio_pci"])
    }

    @Test func modulesAvailableButNotLoaded() throws {
        let result = try Fixture.examine(Fixture.beforeBinding, Fixture.ready { $0.loadedModules = ["kvm", "kvm_intel"] })
        let modules = try #require(result.finding("vfio.modules"))
        #expect(modules.status == .warning)
        #expect(modules.evidence == ["not loaded: vfio, vfio_iommu_type1, vfio_pci"])
        #expect(modules.remedy?.hasPrefix("modprobe vfio-pci") == true)
        // vfio-pci.ko is spelled with a dash on disk and still counts.
        #expect(result.host.availableModules.isSuperset(of: ["vfio", "vfio_iommu_type1", "vfio_pci"]))
    }

    @Test func builtInModulesCountAsAvailable() throws {
        let result = try Fixture.examine(Fixture.beforeBinding, Fixture.ready {
            $0.loadedModules = []
            $0.moduleFiles = ["vfio_pci", "vfio_pci_core"]
            $0.builtinModules = ["vfio", "vfio_iommu_type1"]
        })
        #expect(result.finding("vfio.modules")?.status == .warning)
    }

    @Test func modulesMissingFromTheKernel() throws {
        let result = try Fixture.examine(Fixture.beforeBinding, Fixture.ready {
            $0.loadedModules = ["kvm", "kvm_intel"]
            $0.moduleFiles = ["kvm", "kvm_intel", "vfio"]
        })
        let modules = try #require(result.finding("vfio.modules"))
        #expect(modules.status == .problem)
        #expect(modules.evidence == ["neither loaded nor found under /lib/modules: vfio_iommu_type1, vfio_pci"])
        #expect(modules.remedy?.contains("CONFIG_VFIO_PCI") == true)
    }

    @Test func vfioContainerNode() throws {
        let present = try #require(try Fixture.examine().finding("vfio.container"))
        #expect(present.status == .ok && present.evidence == ["/dev/vfio/vfio"])

        // vfio loaded but no node: something is wrong with devtmpfs/udev.
        let missing = try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.vfioContainerNode = false })
        let finding = try #require(missing.finding("vfio.container"))
        #expect(finding.status == .problem)
        #expect(finding.remedy?.contains("modprobe vfio") == true)

        // vfio not loaded either: the node appears with the module.
        let unloaded = try Fixture.examine(Fixture.beforeBinding, Fixture.ready {
            $0.vfioContainerNode = false
            $0.loadedModules = []
        })
        #expect(unloaded.finding("vfio.container")?.status == .warning)
    }

    // MARK: KVM

    @Test func kvmNodeOnAFixtureIsNotProbed() throws {
        let kvm = try #require(try Fixture.examine().finding("kvm"))
        #expect(kvm.status == .info)
        #expect(kvm.title == "/dev/kvm present (not probed: not the live host)")
        #expect(kvm.remedy == nil)
    }

    @Test func kvmNodeMissing() throws {
        let result = try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.kvmNode = false })
        let kvm = try #require(result.finding("kvm"))
        #expect(kvm.status == .problem)
        #expect(kvm.evidence == ["/dev/kvm does not exist"])
        #expect(kvm.remedy?.contains("kvm_intel") == true)
    }

    // MARK: memory

    @Test func memlockBelowPlannedGuestMemory() throws {
        let result = try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.memlock = .bytes(64 << 20) }, vmMemory: 16 << 30)
        #expect(result.host.memlockLimit == 64 << 20)
        let memlock = try #require(result.finding("memory.memlock"))
        #expect(memlock.status == .warning)
        #expect(memlock.evidence == ["memlock limit 64 MiB; a VM with 16 GiB of RAM pins all of it for DMA"])
        #expect(memlock.remedy?.contains("ulimit -l unlimited") == true)
    }

    @Test func memlockUnlimitedOrLargeEnough() throws {
        let unlimited = try #require(try Fixture.examine(vmMemory: 16 << 30).finding("memory.memlock"))
        #expect(unlimited.status == .ok)
        #expect(unlimited.evidence == ["memlock limit unlimited for 16 GiB of guest RAM"])

        let large = try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.memlock = .bytes(32 << 30) }, vmMemory: 16 << 30)
        #expect(large.finding("memory.memlock")?.status == .ok)
        #expect(large.finding("memory.memlock")?.evidence == ["memlock limit 32 GiB for 16 GiB of guest RAM"])
    }

    /// Off the live host, no limits file means no figure: the rule stays silent rather than
    /// reporting this process's own limit.
    @Test func memlockUnknownWithoutLimitsFile() throws {
        let result = try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.memlock = nil })
        #expect(!result.host.memlockKnown)
        #expect(result.finding("memory.memlock") == nil)
    }

    @Test func hugePagesReserved() throws {
        let hugePages = try #require(try Fixture.examine().finding("memory.hugepages"))
        #expect(hugePages.status == .ok)
        #expect(hugePages.evidence == ["2 MiB pages: 4096 free of 4096"])

        let gigantic = try Fixture.examine(.gpuWorkstation, Fixture.ready {
            $0.hugePages = [.init(sizeKiB: 2048, total: 512, free: 0), .init(sizeKiB: 1_048_576, total: 8, free: 6)]
        })
        #expect(gigantic.finding("memory.hugepages")?.status == .ok)
        #expect(gigantic.finding("memory.hugepages")?.evidence == ["1 GiB pages: 6 free of 8"])
    }

    @Test func noFreeHugePages() throws {
        let result = try Fixture.examine(.gpuWorkstation, Fixture.ready {
            $0.hugePages = [.init(sizeKiB: 2048, total: 1024, free: 0), .init(sizeKiB: 1_048_576, total: 0, free: 0)]
            $0.transparentHugePages = "[always] madvise never"
        })
        let hugePages = try #require(result.finding("memory.hugepages"))
        #expect(hugePages.status == .info)
        // Pools in directory-name order, as the reader lists them.
        #expect(hugePages.evidence == ["1 GiB pages: 0 total, 0 free", "2 MiB pages: 1024 total, 0 free",
                                       "transparent huge pages: [always] madvise never"])
        #expect(hugePages.remedy?.contains("hugepages-2048kB/nr_hugepages") == true)
    }

    // MARK: kernel history

    struct KernelCase: Sendable, CustomTestStringConvertible {
        let release: String
        let hugeFault: Finding.Status
        /// nil: no alignment finding (the kernel has no huge_fault to align).
        let alignment: Finding.Status?
        let memslotZap: Finding.Status
        var testDescription: String { release }
    }

    @Test(arguments: [
        KernelCase(release: "6.11.11-amd64", hugeFault: .info, alignment: nil, memslotZap: .ok),
        KernelCase(release: "6.12.28", hugeFault: .ok, alignment: .warning, memslotZap: .ok),
        KernelCase(release: "6.12.29", hugeFault: .ok, alignment: .ok, memslotZap: .ok),
        KernelCase(release: "6.12.48+deb13-amd64", hugeFault: .ok, alignment: .ok, memslotZap: .ok),
        KernelCase(release: "6.13.12", hugeFault: .ok, alignment: .warning, memslotZap: .ok),
        KernelCase(release: "6.14.6", hugeFault: .ok, alignment: .warning, memslotZap: .ok),
        KernelCase(release: "6.14.7", hugeFault: .ok, alignment: .ok, memslotZap: .ok),
        KernelCase(release: "6.15.0-rc6", hugeFault: .ok, alignment: .ok, memslotZap: .ok),
        KernelCase(release: "5.0.21", hugeFault: .info, alignment: nil, memslotZap: .ok),
        KernelCase(release: "5.1.0", hugeFault: .info, alignment: nil, memslotZap: .problem),
        KernelCase(release: "5.2.10", hugeFault: .info, alignment: nil, memslotZap: .problem),
        KernelCase(release: "5.2.11", hugeFault: .info, alignment: nil, memslotZap: .ok),
    ])
    func kernelHistoryFollowsTheFixtureRelease(_ kernel: KernelCase) throws {
        // The kernel's module directory follows the release, so the modules stay available.
        let result = try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.kernelRelease = kernel.release })
        #expect(result.host.kernelRelease == kernel.release)
        #expect(result.finding("kernel.huge-fault")?.status == kernel.hugeFault)
        #expect(result.finding("kernel.huge-fault-alignment")?.status == kernel.alignment)
        #expect(result.finding("kernel.memslot-zap")?.status == kernel.memslotZap)
        #expect(result.finding("kernel.huge-fault")?.evidence.first?.contains(kernel.release) == true)
    }

    @Test func alignmentFixEvidenceAndRemedy() throws {
        let affected = try #require(try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.kernelRelease = "6.12.28" })
            .finding("kernel.huge-fault-alignment"))
        #expect(affected.evidence.first == "kernel 6.12.28: the fix is in 6.15, 6.12.29 and 6.14.7 (commit c1d9dac0db16)")
        #expect(affected.remedy == "update to 6.12.29+, 6.14.7+ or 6.15+")
        let fixed = try #require(try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.kernelRelease = "6.12.29" })
            .finding("kernel.huge-fault-alignment"))
        #expect(fixed.evidence == ["kernel 6.12.29 includes c1d9dac0db16 (6.15, 6.12.29, 6.14.7)"])
    }

    // MARK: THP and huge BAR mappings

    @Test(arguments: [
        ("6.12.95+deb12-amd64", "[always] madvise never", Finding.Status.ok, "THP mode `always`"),
        ("6.12.95+deb12-amd64", "always [madvise] never", .warning, "THP mode `madvise`: only VMMs that madvise"),
        ("6.12.95+deb12-amd64", "always madvise [never]", .warning, "THP mode `never`: no VMM gets huge BAR mappings"),
        ("7.3.4+deb13-amd64", "always madvise [never]", .ok, "THP mode does not limit huge BAR mappings"),
        ("7.2.0", "always [madvise] never", .ok, "THP mode does not limit huge BAR mappings"),
    ])
    func thpModeJudgedPerKernel(release: String, mode: String, status: Finding.Status, title: String) throws {
        let result = try Fixture.examine(.gpuWorkstation, Fixture.ready {
            $0.kernelRelease = release
            $0.transparentHugePages = mode
        })
        let finding = try #require(result.finding("kernel.thp-bar-mappings"))
        #expect(finding.status == status)
        #expect(finding.title.hasPrefix(title), "\(finding.title)")
        #expect(finding.evidence.first == "transparent_hugepage/enabled: \(mode)")
        if status == .warning {
            #expect(finding.remedy?.contains("/sys/kernel/mm/transparent_hugepage/enabled") == true)
            #expect(finding.remedy?.contains("7.2+ kernel") == true)
        }
    }

    @Test func noTHPDirectoryMeansNoHugeBARMappings() throws {
        let result = try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.transparentHugePages = nil })
        #expect(result.finding("kernel.thp-bar-mappings")?.status == .warning)
        let old = try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.kernelRelease = "6.11.11" })
        #expect(old.finding("kernel.thp-bar-mappings") == nil)   // no huge_fault: kernel.huge-fault says so
    }

    @Test func memslotZapRemedy() throws {
        let zap = try #require(try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.kernelRelease = "5.2.10" })
            .finding("kernel.memslot-zap"))
        #expect(zap.status == .problem)
        #expect(zap.remedy == "update to 5.2.11 or later (reverted by d012a06ab1d2)")
    }

    @Test func noReleaseNoKernelFindings() throws {
        let result = try Fixture.examine(.gpuWorkstation, Fixture.ready { $0.kernelRelease = nil })
        #expect(result.host.kernelRelease == nil)
        #expect(!result.ids.contains { $0.hasPrefix("kernel.") })
        // Still loaded: /sys/module does not need the release.
        #expect(result.finding("vfio.modules")?.status == .ok)
    }

    // MARK: ACS and shared groups

    @Test func sharedGroupBehindTheSwitchNamesTheBridges() throws {
        let result = try Fixture.examine()
        let group = GPUWorkstation.Group.behindSwitch
        let shared = try #require(result.finding("acs.group-\(group)"))
        #expect(shared.status == .warning)
        #expect(shared.title == "Group \(group) is shared by 2 devices in 2 slots")
        let members = [GPUWorkstation.switchDownstreamPortA, GPUWorkstation.switchDownstreamPortB,
                       GPUWorkstation.usbBehindSwitch, GPUWorkstation.sataBehindSwitch].map(\.description)
        #expect(shared.evidence.first == "members: " + members.joined(separator: " "))
        // Port A has no ACS at all, port B has it with nothing enabled; the root port isolates.
        #expect(shared.evidence.contains("\(GPUWorkstation.switchDownstreamPortA) (downstream switch port) has no ACS capability"))
        #expect(shared.evidence.contains("\(GPUWorkstation.switchDownstreamPortB) has ACS but enabled only nothing"))
        #expect(!shared.evidence.contains { $0.contains(GPUWorkstation.switchRootPort.description) })
        #expect(shared.remedy?.contains("--group") == true)
    }

    @Test func onlyMultiSlotGroupsAreReported() throws {
        let result = try Fixture.examine()
        // The chipset functions share a group across slots 00:14, 00:17 and 00:1f; every other
        // group holds one slot (the GPU's two functions included).
        #expect(result.ids.filter { $0.hasPrefix("acs.") } == ["acs.group-\(GPUWorkstation.Group.chipset)", "acs.group-\(GPUWorkstation.Group.behindSwitch)"])
        let chipset = try #require(result.finding("acs.group-\(GPUWorkstation.Group.chipset)"))
        #expect(chipset.title.hasSuffix("in 3 slots"))
    }

    // MARK: GPUs

    @Test func gpuOnVFIOInAViableGroupIsReady() throws {
        let gpu = try #require(try Fixture.examine().finding("gpu.\(Fixture.gpu)"))
        #expect(gpu.status == .ok && gpu.remedy == nil)
        #expect(gpu.evidence.contains("ready: bound to vfio-pci and the group is viable"))
        #expect(gpu.evidence.contains("IOMMU group \(GPUWorkstation.Group.gpu): with \(Fixture.gpuAudio) (vfio-pci)"))
        #expect(gpu.evidence.contains("reset methods: none (the device may not reset between VM runs)"))
    }

    @Test func gpuBeforeBindingGetsTheGroupBindLine() throws {
        let gpu = try #require(try Fixture.examine(Fixture.beforeBinding).finding("gpu.\(Fixture.gpu)"))
        #expect(gpu.status == .info)
        #expect(gpu.remedy == "vfioctl bind \(Fixture.gpu) --group")
        #expect(gpu.evidence.first?.hasPrefix("\(Fixture.gpu) ") == true)
        #expect(gpu.evidence.first?.hasSuffix("driver nouveau") == true)
        #expect(gpu.evidence.contains("IOMMU group \(GPUWorkstation.Group.gpu): with \(Fixture.gpuAudio) (snd_hda_intel)"))
        #expect(gpu.evidence.contains { $0.hasPrefix("blocking: ") && $0.contains("\(Fixture.gpuAudio) (snd_hda_intel)") })
    }

    @Test func bootDisplayGetsForceAndAWarning() throws {
        let igpu = try #require(try Fixture.examine().finding("gpu.\(Fixture.integratedGraphics)"))
        #expect(igpu.status == .warning)
        #expect(igpu.remedy == "vfioctl bind \(Fixture.integratedGraphics) --force")
        #expect(igpu.evidence.contains("boot display (boot_vga=1): binding it takes the host's console"))
        #expect(igpu.evidence.contains("reset methods: flr"))
        #expect(igpu.evidence.contains("IOMMU group \(GPUWorkstation.Group.integratedGraphics): alone"))
    }

    @Test func onlyDisplayControllersGetGPUFindings() throws {
        let result = try Fixture.examine()
        #expect(result.ids.filter { $0.hasPrefix("gpu.") }.sorted() == ["gpu.\(Fixture.integratedGraphics)", "gpu.\(Fixture.gpu)"].sorted())
    }
}

@Suite struct MemlockLimitParserTests {
    /// Captured from a Debian host (the kernel's "%-25s %-20s %-20s %-10s" columns).
    static let debian = """
        Limit                     Soft Limit           Hard Limit           Units     
        Max cpu time              unlimited            unlimited            seconds   
        Max stack size            8388608              unlimited            bytes     
        Max processes             96365                96365                processes 
        Max locked memory         8388608              8388608              bytes     
        Max address space         unlimited            unlimited            bytes     
        Max realtime timeout      unlimited            unlimited            us        

        """

    func parse(_ text: String) -> HostReadinessReader.SoftLimit? { HostReadinessReader.memlockLimit(limitsFile: text) }

    @Test func readsTheSoftColumn() {
        #expect(parse(Self.debian) == .bytes(8 << 20))
        #expect(parse("Max locked memory         65536                unlimited            bytes     \n") == .bytes(65536))
        #expect(parse("Max locked memory         unlimited            unlimited            bytes     \n") == .unlimited)
        #expect(parse("Max locked memory         unlimited            16777216             bytes") == .unlimited)
        #expect(parse("Max locked memory         18446744073709551614 18446744073709551614 bytes") == .bytes(UInt64.max - 1))
        #expect(parse("Max locked memory         0                    0                    bytes") == .bytes(0))
    }

    @Test func rejectsWhatItCannotRead() {
        #expect(parse("") == nil)
        #expect(parse("Max cpu time              unlimited            unlimited            seconds   \n") == nil)
        #expect(parse("Max lockd memory          unlimited            unlimited            bytes     \n") == nil)
        #expect(parse("Max locked memory\n") == nil)
        #expect(parse("Max locked memory         lots                 lots                 bytes") == nil)
        #expect(parse("Max locked memory         -1                   -1                   bytes") == nil)
        #expect(parse("Max locked memory         8M                   8M                   bytes") == nil)
    }

    @Test func unlimitedIsNoLimit() {
        #expect(HostReadinessReader.SoftLimit.unlimited.bytes == nil)
        #expect(HostReadinessReader.SoftLimit.bytes(4096).bytes == 4096)
    }

    /// On the live host the file and getrlimit agree, which is why the reader prefers the file.
    @Test func liveLimitsFileMatchesGetrlimit() throws {
        let text = try String(contentsOfFile: "/proc/self/limits", encoding: .utf8)
        var limit = rlimit()
        try #require(getrlimit(__rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue), &limit) == 0)
        let expected: HostReadinessReader.SoftLimit = limit.rlim_cur == rlim_t.max ? .unlimited : .bytes(UInt64(limit.rlim_cur))
        #expect(parse(text) == expected)
    }

    /// With the real /proc (and a fixture sysfs, so KVM is not probed) the reader takes this
    /// process's limit from /proc/self/limits.
    @Test func readerTakesTheLimitFromRealProc() throws {
        let host = try withTemporarySysfsTree(.gpuWorkstation) { tree in
            try HostReadinessReader(sysfs: SysfsRoot(path: tree.rootPath)).read(names: nil)
        }
        #expect(host.memlockKnown)
        var limit = rlimit()
        try #require(getrlimit(__rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue), &limit) == 0)
        #expect(host.memlockLimit == (limit.rlim_cur == rlim_t.max ? nil : UInt64(limit.rlim_cur)))
    }
}

/// `vfioctl doctor` run as a user would, with every root pointed at a fixture host.
@Suite("vfioctl doctor CLI on fixture hosts")
struct DoctorCLIFixtureTests {
    typealias Output = VfioctlBinary.Result

    func run(_ arguments: [String]) throws -> Output { try VfioctlBinary.run(arguments) }

    func doctor(_ fixture: FixtureHost, _ environment: HostEnvironment, _ extra: [String] = ["--json"]) throws -> Output {
        try withTemporarySysfsTree(fixture) { tree in
            let roots = try tree.writeEnvironment(environment)
            return try run(["doctor", "--sysfs-root", tree.rootPath, "--proc-root", roots.procRoot,
                            "--dev-root", roots.devRoot, "--modules-root", roots.modulesRoot,
                            // No /etc of this machine: the fixture host binds nothing at boot.
                            "--config-root", tree.rootPath + "/no-config"] + extra)
        }
    }

    struct Report {
        let verdict: String?
        let kernel: String?
        let findings: [[String: Any]]

        init(_ output: Output) throws {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any],
                                      "not a JSON object: \(output.stdout) \(output.stderr)")
            verdict = object["verdict"] as? String
            kernel = object["kernel"] as? String
            findings = try #require(object["findings"] as? [[String: Any]])
        }

        var ids: [String] { findings.compactMap { $0["id"] as? String } }
        func finding(_ id: String) -> [String: Any]? { findings.first { $0["id"] as? String == id } }
        func status(_ id: String) -> String? { finding(id)?["status"] as? String }
        func remedy(_ id: String) -> String? { finding(id)?["remedy"] as? String }
        func evidence(_ id: String) -> [String] { finding(id)?["evidence"] as? [String] ?? [] }
    }

    @Test func readyHostAsJSON() throws {
        let output = try doctor(.gpuWorkstation, .ready)
        #expect(output.status == 0, "\(output.stderr)")
        let report = try Report(output)
        #expect(report.verdict == "warning")
        #expect(report.kernel == HostEnvironment.ready.kernelRelease)
        #expect(report.ids == [
            "iommu.enabled", "iommu.interrupt-remapping", "vfio.modules", "vfio.container", "vfio.backends", "kvm",
            "memory.memlock", "memory.hugepages", "dma.budget", "kernel.huge-fault", "kernel.huge-fault-alignment", "kernel.thp-bar-mappings",
            "kernel.memslot-zap",
            "acs.group-\(GPUWorkstation.Group.chipset)", "acs.group-\(GPUWorkstation.Group.behindSwitch)",
            "gpu.\(GPUWorkstation.integratedGraphics)", "gpu.\(GPUWorkstation.gpu)", "vm.mmio-window",
            "version.linux.type1-pfnmap-levels", "version.linux.dmabuf-p2p", "boot.bindings",
        ])
        #expect(report.status("kvm") == "info")
        #expect(report.status("vm.mmio-window") == "ok")
        #expect(report.status("memory.memlock") == "ok")
        #expect(report.remedy("gpu.\(GPUWorkstation.integratedGraphics)") == "vfioctl bind \(GPUWorkstation.integratedGraphics) --force")
        #expect(report.finding("gpu.\(GPUWorkstation.gpu)")?["remedy"] is NSNull)
        #expect(report.evidence("acs.group-\(GPUWorkstation.Group.behindSwitch)")
            .contains("\(GPUWorkstation.switchDownstreamPortB) has ACS but enabled only nothing"))
    }

    @Test func unboundGPUAndLowMemlockAsJSON() throws {
        var environment = HostEnvironment.ready
        environment.memlock = .bytes(64 << 20)
        environment.kernelRelease = "6.12.28"
        let output = try doctor(DoctorFixture.beforeBinding, environment, ["--json", "--vm-memory", "16G"])
        #expect(output.status == 0, "warnings do not fail: \(output.stderr)")
        let report = try Report(output)
        #expect(report.verdict == "warning")
        #expect(report.remedy("gpu.\(GPUWorkstation.gpu)") == "vfioctl bind \(GPUWorkstation.gpu) --group")
        #expect(report.status("memory.memlock") == "warning")
        #expect(report.evidence("memory.memlock") == ["memlock limit 64 MiB; a VM with 16 GiB of RAM pins all of it for DMA"])
        #expect(report.status("kernel.huge-fault-alignment") == "warning")
    }

    @Test func noIOMMUHostFailsWithStatus2() throws {
        let output = try doctor(.noIOMMU, .ready)
        #expect(output.status == 2)
        let report = try Report(output)
        #expect(report.verdict == "problem")
        #expect(report.status("iommu.enabled") == "problem")
        #expect(report.evidence("iommu.enabled").contains { $0.contains("intel_iommu=on") })
        #expect(report.status("gpu.\(GPUWorkstation.gpu)") == "problem")
    }

    @Test func readyHostAsText() throws {
        let output = try doctor(.gpuWorkstation, .ready, [])
        #expect(output.status == 0, "\(output.stderr)")
        #expect(output.stdout.contains("[warn] GPU \(GPUWorkstation.integratedGraphics)"))
        #expect(output.stdout.contains("       fix: vfioctl bind \(GPUWorkstation.integratedGraphics) --force"))
        #expect(output.stdout.contains("[info] /dev/kvm present (not probed: not the live host)"))
        #expect(output.stdout.hasSuffix("verdict: ready, with warnings\n"))
    }

    @Test func rootOptionsAreDocumented() throws {
        let help = try run(["doctor", "--help"])
        for option in ["--proc-root <dir>", "--dev-root <dir>", "--modules-root <dir>"] {
            #expect(help.stdout.contains(option), "\(option)")
        }
    }
}
