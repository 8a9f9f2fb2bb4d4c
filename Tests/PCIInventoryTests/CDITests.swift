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

/// `cdi --backend`: the specs for both backends checked by the CDI specification's own JSON
/// schema (Tests/CDISchema, with python3-jsonschema) and for nodes that exist: a dev root made
/// from the fixture's facts (the groups of its vfio-pci devices, their device files), not from
/// the spec.
@Suite struct CDISchemaTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let checker = repository.appendingPathComponent("Tests/CDISchema/check")
    static let pythonMissing: Bool = {
        guard let result = try? VfioctlBinary.runProgram(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", "import jsonschema"]) else { return true }
        return result.status != 0
    }()

    /// The workstation with a VFIO device file for every vfio-pci function.
    static var host: FixtureHost {
        var host = FixtureHost.gpuWorkstation
        var next = 0
        host.devices = host.devices.map { device in
            var device = device
            if device.driver == "vfio-pci" { device.vfioDeviceFile = "vfio\(next)"; next += 1 }
            return device
        }
        return host
    }

    /// What the kernel would have made in /dev for `host`: both backends' nodes, or one's.
    static func devRoot(_ host: FixtureHost, iommufd: Bool, type1: Bool) throws -> String {
        let dev = NSTemporaryDirectory() + "vfioctl-cdi-dev-\(UUID().uuidString)"
        let files = FileManager.default
        try files.createDirectory(atPath: dev + "/vfio/devices", withIntermediateDirectories: true)
        if iommufd { #expect(files.createFile(atPath: dev + "/iommu", contents: Data())) }
        if type1 { #expect(files.createFile(atPath: dev + "/vfio/vfio", contents: Data())) }
        for device in host.devices where device.driver == "vfio-pci" {
            if type1, let group = device.iommuGroup { _ = files.createFile(atPath: dev + "/vfio/\(group)", contents: Data()) }
            if iommufd, let file = device.vfioDeviceFile { _ = files.createFile(atPath: dev + "/vfio/devices/\(file)", contents: Data()) }
        }
        return dev
    }

    func spec(_ backend: String, dev: String) throws -> (VfioctlBinary.Result, String) {
        try withTemporarySysfsTree(Self.host) { tree in
            let path = tree.rootPath + "/spec-\(backend).json"
            let result = try VfioctlBinary.run(["cdi", "--backend", backend, "--dev-root", dev, "--output", path, "--sysfs-root", tree.rootPath])
            return (result, (try? String(contentsOfFile: path, encoding: .utf8)) ?? "")
        }
    }

    func check(_ text: String, dev: String) throws -> VfioctlBinary.Result {
        let file = NSTemporaryDirectory() + "vfioctl-cdi-\(UUID().uuidString).json"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        return try VfioctlBinary.runProgram(URL(fileURLWithPath: "/usr/bin/env"), ["python3", Self.checker.path, file, "--dev-root", dev])
    }

    @Test("both backends' specs pass the CDI schema and name only nodes that exist",
          .disabled(if: pythonMissing, "python3 with jsonschema is not available (Debian: apt-get install python3-jsonschema; .ci/setup installs it)"))
    func schemaAndNodes() throws {
        let dev = try Self.devRoot(Self.host, iommufd: true, type1: true)
        defer { try? FileManager.default.removeItem(atPath: dev) }
        for backend in ["type1", "iommufd"] {
            let (result, text) = try spec(backend, dev: dev)
            #expect(result.status == 0, "\(backend): \(result.stderr)")
            let checked = try check(text, dev: dev)
            #expect(checked.status == 0, "\(backend): \(checked.stderr)")
            #expect(checked.stdout.contains("5 devices, 6 nodes, 0 problems"), "\(backend): \(checked.stdout)")
        }
        // The checker fails what is wrong: a spec with a node the kernel did not make, and one
        // the schema refuses.
        let (_, iommufd) = try spec("iommufd", dev: dev)
        let missing = try check(iommufd.replacingOccurrences(of: "/dev/vfio/devices/vfio0", with: "/dev/vfio/devices/vfio9"), dev: dev)
        #expect(missing.status == 1 && missing.stderr.contains("/dev/vfio/devices/vfio9 does not exist"), "\(missing.stderr)")
        let invalid = try check(iommufd.replacingOccurrences(of: "\"cdiVersion\" : \"0.6.0\"", with: "\"cdiVersion\" : 6"), dev: dev)
        #expect(invalid.status == 1 && invalid.stderr.contains("schema: cdiVersion"), "\(invalid.stderr)")
    }

    @Test func iommufdSpecNamesDeviceFilesAndDevIOMMU() throws {
        let dev = try Self.devRoot(Self.host, iommufd: true, type1: false)
        defer { try? FileManager.default.removeItem(atPath: dev) }
        let (result, text) = try spec("iommufd", dev: dev)
        #expect(result.status == 0, "\(result.stderr)")
        let spec = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let devices = try #require(spec["devices"] as? [[String: Any]])
        let nodes = devices.map { (($0["containerEdits"] as? [String: Any])?["deviceNodes"] as? [[String: Any]])?.compactMap { $0["path"] as? String } ?? [] }
        #expect(nodes == (0..<5).map { ["/dev/vfio/devices/vfio\($0)"] })
        #expect((devices[0]["annotations"] as? [String: String])?["vfioctl/vfio-device-file"] == "vfio0")
        let common = try #require(spec["containerEdits"] as? [String: Any])
        #expect((common["deviceNodes"] as? [[String: Any]])?.compactMap { $0["path"] as? String } == ["/dev/iommu"])
        // auto takes iommufd on this host, type1 keeps the group nodes.
        #expect(try self.spec("auto", dev: dev).1 == text)
        #expect(try self.spec("type1", dev: dev).1.contains("\"/dev/vfio/8\""))
    }

    @Test func iommufdRefusedWithoutDevIOMMUOrDeviceFiles() throws {
        let dev = try Self.devRoot(Self.host, iommufd: false, type1: true)
        defer { try? FileManager.default.removeItem(atPath: dev) }
        try withTemporarySysfsTree(Self.host) { tree in
            let result = try VfioctlBinary.run(["cdi", "--backend", "iommufd", "--dev-root", dev, "--sysfs-root", tree.rootPath])
            #expect(result.status == 3)
            #expect(result.stdout.isEmpty)
            #expect(result.stderr.contains("/dev/iommu") && result.stderr.contains("CONFIG_IOMMUFD"), "\(result.stderr)")
            let auto = try VfioctlBinary.run(["cdi", "--dev-root", dev, "--sysfs-root", tree.rootPath])
            #expect(auto.status == 0 && auto.stdout.contains("\"/dev/vfio/vfio\""), "\(auto.stderr)")
        }
        // A mixed set: one vfio-pci function without its file.
        var mixed = Self.host
        mixed.devices = mixed.devices.map { device in
            var device = device
            if device.vfioDeviceFile == "vfio1" { device.vfioDeviceFile = nil }
            return device
        }
        let iommu = try Self.devRoot(mixed, iommufd: true, type1: true)
        defer { try? FileManager.default.removeItem(atPath: iommu) }
        try withTemporarySysfsTree(mixed) { tree in
            for backend in ["auto", "iommufd"] {
                let result = try VfioctlBinary.run(["cdi", "--backend", backend, "--dev-root", iommu, "--sysfs-root", tree.rootPath])
                #expect(result.status == 3, "\(backend)")
                #expect(result.stdout.isEmpty)
                #expect(result.stderr.contains("mixed set"), "\(result.stderr)")
            }
        }
    }
}
