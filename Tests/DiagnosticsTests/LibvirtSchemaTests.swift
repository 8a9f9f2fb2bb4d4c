import Foundation
import SysfsFixtures
import Testing
@testable import VMMConfig

/// libvirt's own schema (virt-xml-validate from Debian's libvirt-clients, which runs xmllint
/// from libxml2-utils) judges the XML `vm config` prints, inside a minimal domain.
enum LibvirtValidator {
    static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static let validator = find("virt-xml-validate")
    static let available = validator != nil && find("xmllint") != nil

    /// The plan's elements in a domain: its `<domain>` part at the top, its `<devices>` part in
    /// `<devices>`; xmlns:qemu for the x-vga override.
    static func domain(_ plan: VMMConfigPlan) -> String {
        """
        <domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
          <name>vfioctl-schema-check</name>
        \(plan.libvirtDomain)
          <os>
            <type arch='x86_64' machine='q35'>hvm</type>
          </os>
          <devices>
        \(plan.libvirtDevices)
          </devices>
        </domain>
        """
    }

    /// virt-xml-validate's status and output for `xml` as a domain.
    static func validate(_ xml: String) throws -> VfioctlBinary.Result {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("vfioctl-domain-\(UUID().uuidString).xml")
        try xml.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        guard let validator else { throw CocoaError(.fileNoSuchFile) }
        return try VfioctlBinary.runProgram(URL(fileURLWithPath: validator), [file.path, "domain"])
    }
}

/// Each test (not the suite) carries the condition, so a host without the validator reports
/// every one of them as skipped, with the reason.
@Suite("vm config: libvirt XML against libvirt's schema")
struct LibvirtSchemaTests {
    static let validatorMissing = "virt-xml-validate or xmllint is not on PATH (Debian: apt-get install libvirt-clients libxml2-utils; .ci/setup installs them)"

    typealias Fixture = PlannerFixture

    /// Every shape of output: multifunction slot with a ROM file, a boot display (alias, video,
    /// qemu:override), a group over two slots, and a lone device on huge pages.
    static func plans() throws -> [(String, VMMConfigPlan)] {
        let display = Fixture.workstation([GPUWorkstation.integratedGraphics: "vfio-pci"])
        let sata = Fixture.workstation([GPUWorkstation.sataBehindSwitch: "vfio-pci"])
        return [
            ("gpu slot", try #require(try Fixture.plan(Fixture.noHugePages, Fixture.request(GPUWorkstation.gpu, .slot, romFile: "/srv/gpu.rom")).plan)),
            ("boot display", try #require(try Fixture.plan(display, Fixture.noHugePages, Fixture.request(GPUWorkstation.integratedGraphics)).plan)),
            ("group", try #require(try Fixture.plan(sata, .ready, Fixture.request(GPUWorkstation.sataBehindSwitch, .group)).plan)),
            ("lone device", try #require(try Fixture.plan(.ready, Fixture.request(GPUWorkstation.gpu, memory: 256 << 20)).plan)),
        ]
    }

    @Test(.enabled(if: LibvirtValidator.available, Comment(rawValue: validatorMissing)))
    func printedXMLValidates() throws {
        for (name, plan) in try Self.plans() {
            let result = try LibvirtValidator.validate(LibvirtValidator.domain(plan))
            #expect(result.status == 0, "\(name): \(result.stdout)\(result.stderr)\n\(LibvirtValidator.domain(plan))")
        }
    }

    /// The check can fail: the same domain with a value the schema does not allow is rejected.
    @Test(.enabled(if: LibvirtValidator.available, Comment(rawValue: validatorMissing)))
    func theSchemaRejectsABrokenHostdev() throws {
        let plan = try #require(try Self.plans().first?.1)
        let broken = LibvirtValidator.domain(plan).replacingOccurrences(of: "managed='no'", with: "managed='maybe'")
        let result = try LibvirtValidator.validate(broken)
        #expect(result.status != 0)
        #expect((result.stdout + result.stderr).contains("fails to validate"))
    }
}
