import Foundation
import SysfsFixtures
import Testing

@Suite struct CDICLITests {
    @Test func specForTheWorkstationsVFIODevices() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let result = try VfioctlBinary.run(["cdi", "--sysfs-root", tree.rootPath])
            #expect(result.status == 0, "\(result.stderr)")
            let spec = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
            #expect(spec["cdiVersion"] as? String == "0.6.0")
            #expect(spec["kind"] as? String == "vfioctl/pci")
            let devices = try #require(spec["devices"] as? [[String: Any]])
            // The GPU and its audio function (group 8), the SATA controller behind the switch and
            // two of the SR-IOV VFs: every vfio-pci function of a viable group.
            #expect(devices.compactMap { $0["name"] as? String } == ["0000-01-00.0", "0000-01-00.1", "0000-06-00.0", "0000-08-02.1", "0000-08-02.2"])
            let groups = try devices.map { device -> [String] in
                let edits = try #require(device["containerEdits"] as? [String: Any])
                let nodes = try #require(edits["deviceNodes"] as? [[String: Any]])
                return nodes.compactMap { $0["path"] as? String }
            }
            #expect(groups == [["/dev/vfio/8"], ["/dev/vfio/8"], ["/dev/vfio/12"], ["/dev/vfio/15"], ["/dev/vfio/16"]])
            let annotations = try #require(devices[0]["annotations"] as? [String: String])
            #expect(annotations["vfioctl/pci-address"] == "0000:01:00.0")
            #expect(annotations["vfioctl/vendor-device"] == "10de:2204")
            let common = try #require(spec["containerEdits"] as? [String: Any])
            #expect((common["deviceNodes"] as? [[String: Any]])?.compactMap { $0["path"] as? String } == ["/dev/vfio/vfio"])
        }
    }

    @Test func writesTheFileAtomicallyWithAnotherKind() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let path = tree.rootPath + "/vfioctl-cdi.json"
            let result = try VfioctlBinary.run(["cdi", "--kind", "example.com/gpu", "--output", path, "--sysfs-root", tree.rootPath])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.isEmpty)
            let spec = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
            #expect(spec["kind"] as? String == "example.com/gpu")
            #expect(!FileManager.default.fileExists(atPath: path + ".vfioctl-tmp"))
        }
    }

    @Test(arguments: ["gpu", "example.com/", "Example.com/gpu", "example.com/gpu/x", "example.com/-gpu", "a..b/gpu"])
    func invalidKindIsAUsageError(kind: String) throws {
        let result = try VfioctlBinary.run(["cdi", "--kind", kind])
        #expect(result.status == 64, "\(kind)")
    }

    @Test func noVFIODeviceIsAClearError() throws {
        try withTemporarySysfsTree(.noIOMMU) { tree in
            let result = try VfioctlBinary.run(["cdi", "--sysfs-root", tree.rootPath])
            #expect(result.status == 1)
            #expect(result.stderr.contains("no device is bound to vfio-pci"))
            #expect(result.stdout.isEmpty)
        }
    }
}
