@testable import BARPlacement
@testable import HostKernel
import PCIInventory
import Testing

/// The fault path's THP rule (HostKernel.HugeFaultHost) and the planner under it.
@Suite("huge-fault gate: THP mode, madvise, prctl, kernel version")
struct HugeFaultGateTests {
    static let gib: UInt64 = 1 << 30

    @Test func sysfsModeIsTheBracketedWord() {
        #expect(TransparentHugePageMode(sysfsText: "always [madvise] never") == .madvise)
        #expect(TransparentHugePageMode(sysfsText: "[always] madvise never") == .always)
        #expect(TransparentHugePageMode(sysfsText: "always madvise [never]\n") == .never)
        #expect(TransparentHugePageMode(sysfsText: "always madvise never") == nil)
        #expect(TransparentHugePageMode(sysfsText: "[sometimes] never") == nil)
        #expect(TransparentHugePageMode(sysfsText: "[always") == nil)
        #expect(TransparentHugePageMode(sysfsText: "") == nil)
    }

    @Test func prctlResults() {
        #expect(ProcessTHPSetting(prctlResult: 0) == .inherited)
        #expect(ProcessTHPSetting(prctlResult: 1) == .disabled)
        #expect(ProcessTHPSetting(prctlResult: 3) == .disabledExceptAdvised)
    }

    /// The kernels' behaviour as measured in the lab (kretprobe on vfio_pci_mmap_huge_fault,
    /// ivshmem's 1 GiB BAR at the congruent address): 6.12.95 applies the mode, 7.3.4 does not.
    @Test(arguments: [
        ("6.12.95+deb12-amd64", TransparentHugePageMode.always, MappingHugePageAdvice.none, true),
        ("6.12.95+deb12-amd64", .always, .hugePage, true),
        ("6.12.95+deb12-amd64", .madvise, .none, false),
        ("6.12.95+deb12-amd64", .madvise, .hugePage, true),
        ("6.12.95+deb12-amd64", .never, .none, false),
        ("6.12.95+deb12-amd64", .never, .hugePage, false),
        ("7.3.4+deb13-amd64", .always, .none, true),
        ("7.3.4+deb13-amd64", .madvise, .none, true),
        ("7.3.4+deb13-amd64", .madvise, .hugePage, true),
        ("7.3.4+deb13-amd64", .never, .none, true),
        ("7.3.4+deb13-amd64", .never, .hugePage, true),
    ])
    func measuredKernels(release: String, mode: TransparentHugePageMode, advice: MappingHugePageAdvice, huge: Bool) throws {
        let kernel = try #require(KernelVersion(release: release))
        let host = HugeFaultHost(kernel: kernel, mode: mode)
        #expect(host.gate(for: advice).allowsHugeFaults == huge)
    }

    @Test func everyCombinationHasOneGateAndAReason() throws {
        let kernels = [KernelVersion(6, 11, 11), KernelVersion(6, 12, 0), KernelVersion(7, 1, 9), KernelVersion(7, 2, 0), KernelVersion(7, 3, 4)]
        for kernel in kernels {
            for mode in TransparentHugePageMode.allCases.map(Optional.some) + [nil] {
              for modeKnown in [true, false] {
                for process in ProcessTHPSetting.allCases {
                    for advice in MappingHugePageAdvice.allCases {
                        let host = HugeFaultHost(kernel: kernel, mode: mode, modeKnown: modeKnown, process: process)
                        let gate = host.gate(for: advice)
                        let expected: HugeFaultGate
                        // The kernel's order of checks, written out independently of gate(for:).
                        if kernel < KernelVersion(6, 12) { expected = .noHandler }
                        else if mode == nil { expected = modeKnown ? .noTHP : .modeUnknown }
                        else if advice == .noHugePage { expected = .mappingRefused }
                        else if process == .disabled { expected = .processDisabled }
                        else if process == .disabledExceptAdvised && advice != .hugePage { expected = .processDisabledExceptAdvised }
                        else if kernel >= KernelVersion(7, 2) { expected = .modeBypassed }
                        else if mode == .always { expected = .modeAlways }
                        else if mode == .never { expected = .modeNever }
                        else { expected = advice == .hugePage ? .modeMadviseAdvised : .modeMadviseNotAdvised }
                        #expect(gate == expected, "\(kernel) \(String(describing: mode)) \(process) \(advice)")
                        #expect(!host.explanation(for: advice).isEmpty)
                    }
                  }
                }
            }
        }
    }

    @Test func boundaryVersions() {
        #expect(!KernelHistory.bypassesTHPModeForHugePFNMaps(KernelVersion(6, 12, 95)))
        #expect(!KernelHistory.bypassesTHPModeForHugePFNMaps(KernelVersion(7, 1, 99)))
        #expect(KernelHistory.bypassesTHPModeForHugePFNMaps(KernelVersion(7, 2, 0)))
        #expect(KernelHistory.bypassesTHPModeForHugePFNMaps(KernelVersion(7, 3, 4)))
    }

    /// Where the gate refuses, the handler only ever sees order 0: the lab's `never` histogram
    /// on a 1 GiB BAR is {order 0 inserted: 262144}, with no PMD or PUD attempt.
    @Test func refusedGateGivesOnlyBasePages() throws {
        let mapping = try MappingGeometry(virtualStart: 5 * Self.gib, length: Self.gib, physicalStart: 0x1_0000_0000)
        let refused = try FaultPlanner(mapping: mapping, geometry: .tried(under: .modeNever)).predict(.linear)
        #expect(refused.calls == [HandlerCallCount(order: 0, outcome: .inserted, count: 262_144)])
        #expect(refused.mappingsByOrder == [0: 262_144])
        let allowed = try FaultPlanner(mapping: mapping, geometry: .tried(under: .modeMadviseAdvised)).predict(.linear)
        #expect(allowed.calls == [HandlerCallCount(order: 18, outcome: .inserted, count: 1)])
        #expect(PageGeometry.tried(under: .modeBypassed) == .x86_64)
        #expect(PageGeometry.tried(under: .processDisabled) == .basePagesOnly)
    }

    @Test func areaPlanPlacesByTheFullGeometryButPredictsWhatIsTried() throws {
        let plan = try AreaPlan.make(physicalStart: 0x1_0000_0000, length: 2 * Self.gib, faultGeometry: .basePagesOnly)
        #expect(plan.alignment == Self.gib)
        #expect(plan.minimumMappings == [0: 524_288])
        #expect(plan.placements[0].fixed.mappingsByOrder == [0: 524_288])
        #expect(plan.placements[0].reachesMinimum)
    }

    /// This process's prctl switch, read back live.
    @Test func currentProcessSettingFollowsPrctl() {
        let before = HugeFaultHostReader.currentProcessSetting()
        #expect(cuapiSetTHPDisable(1) == 0)
        #expect(HugeFaultHostReader.currentProcessSetting() == .disabled)
        #expect(cuapiSetTHPDisable(0) == 0)
        #expect(HugeFaultHostReader.currentProcessSetting() == .inherited)
        if before == .disabled { _ = cuapiSetTHPDisable(1) }
    }

    @Test func liveRootsAreRecognisedByIdentityNotSpelling() {
        #expect(SysfsRoot.isSameDirectory("/sys/.", "/sys"))
        #expect(SysfsRoot.isSameDirectory("//sys", "/sys"))
        #expect(!SysfsRoot.isSameDirectory("/tmp", "/sys"))
    }
}

import CLinuxUAPI
private func cuapiSetTHPDisable(_ disable: UInt) -> Int32 { cuapi_set_thp_disable(disable, 0) }
