import Foundation
import SysfsFixtures
import Testing

/// `vfioctl vm config` end to end on the workstation fixture tree (no huge pages in a bare
/// tree, so the arguments show only RAM and devices).
@Suite("vfioctl vm config CLI")
struct VMConfigCLITests {
    func run(_ arguments: [String]) throws -> VfioctlBinary.Result {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            try VfioctlBinary.run(["vm", "config"] + arguments + ["--sysfs-root", tree.rootPath])
        }
    }

    @Test func qemuArgumentsAloneOnStdout() throws {
        let result = try run(["01:00.0", "--slot", "--vmm", "qemu", "--memory", "4G"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "-m 4G -device vfio-pci,host=0000:01:00.0,addr=0x10.0,multifunction=on -device vfio-pci,host=0000:01:00.1,addr=0x10.1,rombar=0\n")
    }

    @Test func cloudHypervisorAndLibvirtAlone() throws {
        let ch = try run(["0000:01:00.1", "--vmm", "cloud-hypervisor", "--memory", "512M"])
        #expect(ch.stdout == "--memory size=512M --device path=/sys/bus/pci/devices/0000:01:00.1/\n")
        let libvirt = try run(["0000:01:00.0", "--group", "--vmm", "libvirt", "--guest-slot", "0x05"])
        #expect(libvirt.stdout.hasPrefix("<hostdev mode='subsystem' type='pci' managed='no'>"))
        #expect(libvirt.stdout.contains("slot='0x05' function='0x0' multifunction='on'/>"))
    }

    @Test func allVMMsWithHostSection() throws {
        let result = try run(["0000:01:00.0", "--slot"])
        #expect(result.status == 0)
        for heading in ["QEMU:", "libvirt, in <devices>:", "libvirt, in <domain>:", "Cloud Hypervisor:", "Host, for 8 GiB of guest RAM:"] {
            #expect(result.stdout.contains("\n\(heading)\n"), "\(heading)")
        }
        #expect(result.stdout.contains("No free huge pages reserved"))
    }

    @Test func notViableGroupPrintsNothingAndExits3() throws {
        for extra in [[], ["--json"]] {
            let result = try run(["0000:02:00.0"] + extra)
            #expect(result.status == 3)
            #expect(result.stdout.isEmpty)
            #expect(result.stderr.contains("not viable: 0000:02:00.0 bound to host driver nvme"))
            #expect(result.stderr.contains("bind first: vfioctl bind 0000:02:00.0\n"))
        }
    }

    @Test func jsonHasEveryVMM() throws {
        let result = try run(["0000:01:00.0", "--slot", "--json", "--memory", "2G"])
        #expect(result.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(Set(object.keys) == ["address", "addresses", "scope", "group", "groups", "memory", "devices", "left_on_host", "qemu", "libvirt_devices",
                                     "libvirt_domain", "cloud_hypervisor", "host", "notes", "backend", "forms", "iommufd_unavailable"])
        #expect(object["memory"] as? Int == 2 << 30)
        let devices = try #require(object["devices"] as? [[String: Any]])
        #expect(devices.map { $0["guest_address"] as? String } == ["0000:00:10.0", "0000:00:10.1"])
        #expect(devices.map { $0["rom"] as? String } == ["device", "off"])
        #expect(devices[0]["rom_file"] is NSNull)
        #expect((object["qemu"] as? [String])?.first == "-m")
    }

    @Test func badValuesAreUsageErrors() throws {
        for arguments in [["01:00.0", "--memory", "1500K"], ["01:00.0", "--memory", "lots"], ["01:00.0", "--guest-slot", "0x20"],
                          ["01:00.0", "--rom-file", "gpu.rom"], ["01:00.0", "--rom-file", "/a,b"], ["01:00.0", "--vmm", "xen"],
                          ["01:00.0", "--slot", "--group"]] {
            let result = try run(arguments)
            #expect(result.status == 64, "\(arguments): \(result.stderr)")
            #expect(result.stdout.isEmpty)
        }
        // A malformed address is a usage error too; the help says what a function may be.
        let address = try run(["01:00.9"])
        #expect(address.status == 64)
        #expect(address.stderr.contains("function 0-7"))
    }

    // MARK: --backend

    /// The workstation with the GPU's functions given VFIO device files, run with a dev root that
    /// has /dev/iommu or not.
    func runBackend(_ arguments: [String], iommufd: Bool, deviceFiles: Bool = true) throws -> VfioctlBinary.Result {
        var host = FixtureHost.gpuWorkstation
        if deviceFiles {
            host.devices = host.devices.map { device in
                var device = device
                if device.address == GPUWorkstation.gpu { device.vfioDeviceFile = "vfio0" }
                if device.address == GPUWorkstation.gpuAudio { device.vfioDeviceFile = "vfio1" }
                return device
            }
        }
        let dev = NSTemporaryDirectory() + "vfioctl-dev-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dev, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dev) }
        if iommufd { #expect(FileManager.default.createFile(atPath: dev + "/iommu", contents: Data())) }
        return try withTemporarySysfsTree(host) { tree in
            try VfioctlBinary.run(["vm", "config"] + arguments + ["--sysfs-root", tree.rootPath, "--dev-root", dev])
        }
    }

    @Test func iommufdWithoutDevIOMMUPrintsNothingAndExits3() throws {
        for extra in [["--vmm", "qemu"], ["--json"], []] {
            let result = try runBackend(["0000:01:00.0", "--slot", "--backend", "iommufd"] + extra, iommufd: false)
            #expect(result.status == 3, "\(extra)")
            #expect(result.stdout.isEmpty, "\(extra): \(result.stdout)")
            #expect(result.stderr.contains("/dev/iommu") && result.stderr.contains("CONFIG_IOMMUFD"), "\(result.stderr)")
        }
    }

    @Test func iommufdMissingDeviceFileExits3() throws {
        let result = try runBackend(["0000:01:00.0", "--backend", "iommufd", "--vmm", "qemu"], iommufd: true, deviceFiles: false)
        #expect(result.status == 3)
        #expect(result.stdout.isEmpty)
        #expect(result.stderr.contains("0000:01:00.0 has no VFIO device file") && result.stderr.contains("CONFIG_VFIO_DEVICE_CDEV"), "\(result.stderr)")
    }

    @Test func iommufdQEMUFormOnStdoutNotesOnStderr() throws {
        let result = try runBackend(["0000:01:00.0", "--slot", "--backend", "iommufd", "--vmm", "qemu", "--memory", "4G"], iommufd: true)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "-m 4G -object iommufd,id=iommufd0 -device vfio-pci,host=0000:01:00.0,iommufd=iommufd0,addr=0x10.0,multifunction=on -device vfio-pci,host=0000:01:00.1,iommufd=iommufd0,addr=0x10.1,rombar=0\n")
        #expect(result.stderr.contains("QEMU 8.2") && result.stderr.contains("RLIMIT_MEMLOCK"), "\(result.stderr)")
        let ch = try runBackend(["0000:01:00.0", "--vmm", "cloud-hypervisor", "--memory", "512M"], iommufd: true)
        #expect(ch.stdout == "--memory size=512M --platform iommufd=on --device path=/sys/bus/pci/devices/0000:01:00.0/\n")
    }

    @Test func jsonCarriesBothForms() throws {
        let result = try runBackend(["0000:01:00.0", "--slot", "--json"], iommufd: true)
        #expect(result.status == 0, "\(result.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(object["backend"] as? String == "iommufd")
        let forms = try #require(object["forms"] as? [String: Any])
        let type1 = try #require(forms["type1"] as? [String: Any]), iommufd = try #require(forms["iommufd"] as? [String: Any])
        #expect((type1["qemu"] as? [String])?.contains("-object") == false)
        #expect((iommufd["qemu"] as? [String])?.contains("iommufd,id=iommufd0") == true)
        #expect((iommufd["libvirt_devices"] as? String)?.contains("<driver iommufd='yes'/>") == true)
        #expect((iommufd["cloud_hypervisor"] as? [String])?.contains("iommufd=on") == true)
        let devices = try #require(object["devices"] as? [[String: Any]])
        #expect(devices.map { $0["device_file"] as? String } == ["/dev/vfio/devices/vfio0", "/dev/vfio/devices/vfio1"])
        // Without /dev/iommu: the iommufd form is null, and the reason is given.
        let plain = try runBackend(["0000:01:00.0", "--slot", "--json"], iommufd: false)
        let other = try #require(try JSONSerialization.jsonObject(with: Data(plain.stdout.utf8)) as? [String: Any])
        #expect(other["backend"] as? String == "type1")
        #expect((other["forms"] as? [String: Any])?["iommufd"] is NSNull)
        #expect((other["iommufd_unavailable"] as? String)?.contains("CONFIG_IOMMUFD") == true)
    }
}
