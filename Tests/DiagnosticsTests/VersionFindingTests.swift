@testable import Diagnostics
import HostKernel
import PCIInventory
import SysfsFixtures
import Testing

/// Doctor's version findings from `KernelHistory.versionFacts`, on the workstation fixture (its
/// GPU's BAR1: 256 MiB at 0xc0000000, on vfio-pci).
@Suite("version findings")
struct VersionFindingTests {
    static func findings(kernel: String, qemu: String?) throws -> [Finding] {
        var environment = HostEnvironment.ready
        environment.kernelRelease = kernel
        var host = try DoctorFixture.examine(.gpuWorkstation, environment).host
        host.qemuVersion = qemu
        return Doctor.versions(host)
    }

    @Test func bookwormHostMissesTheLaterKernelsAndQEMUs() throws {
        let findings = try Self.findings(kernel: "6.12.95+deb12-amd64", qemu: "7.2.22")
        #expect(findings.map(\.id) == ["version.linux.type1-pfnmap-levels", "version.linux.dmabuf-p2p",
                                       "version.qemu.iommufd", "version.qemu.bar-mmap-alignment"])
        let alignment = try #require(findings.last)
        // 256 MiB in 4 KiB pages against the planner's fewest (128 x 2 MiB).
        #expect(alignment.evidence.first == "QEMU 7.2.22 maps BARs misaligned: expect 65536 page-table entries instead of 128 for 0000:01:00.0 BAR 1 (256 MiB)")
        #expect(alignment.evidence.contains { $0.hasPrefix("source: QEMU 9.2") })
    }

    @Test func newKernelAndQEMUMissNothing() throws {
        #expect(try Self.findings(kernel: "7.3.4+bpo-amd64", qemu: "9.2.0").isEmpty)
        let old = try Self.findings(kernel: "6.1.0", qemu: nil)
        #expect(old.map(\.id) == ["version.linux.vfio-huge-fault", "version.linux.type1-pfnmap-levels", "version.linux.dmabuf-p2p"])
    }

    @Test func tableAndParsing() {
        #expect(KernelHistory.versionFacts.allSatisfy { !$0.source.isEmpty })
        #expect(KernelHistory.missing(.linux, KernelVersion(6, 15)).map(\.id) == ["linux.dmabuf-p2p"])
        #expect(KernelHistory.hasHugeFault(KernelVersion(6, 12)) && !KernelHistory.hasHugeFault(KernelVersion(6, 11, 9)))
        #expect(HostReadinessReader.parseQEMUVersion("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright") == "7.2.22")
        #expect(HostReadinessReader.parseQEMUVersion("not qemu") == nil)
    }
}
