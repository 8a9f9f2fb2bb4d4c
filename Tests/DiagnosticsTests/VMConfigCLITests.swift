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
                                     "libvirt_domain", "cloud_hypervisor", "host", "notes"])
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
}
