import Testing
@testable import Diagnostics
import PCIBinding
import PCIInventory

@Suite struct DoctorHolderTests {
    @Test func holdersOfGPUFunctionsAndVFIODevicesAreListed() throws {
        var host = try DoctorHost.workstation()
        let gpuAudio = try PCIAddress(parsing: "01:00.1")
        let vfioNIC = try PCIAddress(parsing: "04:00.1")
        let nvme = try PCIAddress(parsing: "05:00.0")
        host.holders = [
            gpuAudio: [Holder(pid: 812, command: "pipewire", what: "/dev/snd/controlC1 (char 116:9) open as fd 30")],
            vfioNIC: [Holder(pid: 4343, command: "qemu-system-x86", what: "/dev/vfio/6 (char 244:0) open as fd 41")],
            // A disk held by the host is ordinary: not a passthrough finding.
            nvme: [Holder(pid: 1, command: "systemd", what: "/dev/nvme0n1 (block 259:0) open as fd 9")],
        ]
        let findings = Doctor.examine(host)
        let audio = try #require(findings.first { $0.id == "holders.0000:01:00.1" })
        #expect(audio.status == .warning)
        #expect(audio.evidence.contains("pid 812 (pipewire) has /dev/snd/controlC1 (char 116:9) open as fd 30"))
        #expect(audio.remedy?.contains("vfioctl bind 0000:01:00.1") == true)
        let vm = try #require(findings.first { $0.id == "holders.0000:04:00.1" })
        #expect(vm.status == .info && vm.evidence.contains { $0.contains("pid 4343 (qemu-system-x86)") })
        #expect(!findings.contains { $0.id == "holders.0000:05:00.0" })
        // Without holders there is no such finding at all.
        host.holders = [:]
        #expect(!Doctor.examine(host).contains { $0.id.hasPrefix("holders.") })
    }
}
