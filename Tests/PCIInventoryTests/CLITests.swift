import Foundation
import Testing

/// Runs the built `vfioctl` binary, as a user would.
enum VfioctlBinary {
    /// The binary sits next to the test bundle in the build folder (`swift build --build-tests`
    /// builds both).
    static var url: URL? {
        var directory = URL(fileURLWithPath: CommandLine.arguments.first ?? "").deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("vfioctl")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        for bundle in Bundle.allBundles {
            let candidate = bundle.bundleURL.deletingLastPathComponent().appendingPathComponent("vfioctl")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return nil
    }

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let binary = try #require(url, "vfioctl binary not found next to the tests: run `swift build --build-tests` first")
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "VFIOCTL_SYSFS_ROOT")
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both pipes before waiting so a large output cannot block the child.
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }
}

@Suite struct HostCLITests {
    var hostHasIOMMUGroups: Bool {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/kernel/iommu_groups")) ?? []).isEmpty == false
    }

    @Test func listOnThisMachine() throws {
        let result = try VfioctlBinary.run(["list"])
        #expect(result.status == 0, "\(result.stderr)")
        let deviceCount = try FileManager.default.contentsOfDirectory(atPath: "/sys/bus/pci/devices").count
        let deviceLines = result.stdout.split(separator: "\n").filter { $0.range(of: #"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7] "#, options: .regularExpression) != nil }
        #expect(deviceLines.count == deviceCount)
        if !hostHasIOMMUGroups {
            #expect(result.stdout.contains("No IOMMU groups"))
            #expect(result.stdout.contains("intel_iommu=on"))
            #expect(result.stdout.contains("/sys/class/iommu"))
            #expect(deviceLines.allSatisfy { $0.contains("group -") })
        }
    }

    @Test func groupsOnThisMachine() throws {
        let text = try VfioctlBinary.run(["groups"])
        #expect(text.status == 0)
        let json = try VfioctlBinary.run(["groups", "--json"])
        #expect(json.status == 0)
        let groups = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]]
        #expect(groups != nil)
        if !hostHasIOMMUGroups {
            #expect(groups?.isEmpty == true)
            #expect(text.stdout.contains("No IOMMU groups"))
            // JSON stays clean; the explanation goes to stderr.
            #expect(json.stderr.contains("No IOMMU groups"))
        }
    }

    @Test func listJSONHasTheDocumentedKeys() throws {
        let result = try VfioctlBinary.run(["list", "--json"])
        #expect(result.status == 0)
        let devices = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        #expect(!devices.isEmpty)
        for device in devices {
            for key in ["address", "vendor_id", "device_id", "class", "vendor_name", "device_name", "driver", "iommu_group", "bars"] {
                #expect(device.keys.contains(key), "missing \(key)")
            }
            let vendor = try #require(device["vendor_id"] as? String)
            #expect(vendor.range(of: "^[0-9a-f]{4}$", options: .regularExpression) != nil)
            let classCode = try #require(device["class"] as? String)
            #expect(classCode.range(of: "^[0-9a-f]{6}$", options: .regularExpression) != nil)
            for bar in try #require(device["bars"] as? [[String: Any]]) {
                for key in ["index", "start", "size", "kind", "is64", "prefetchable"] { #expect(bar.keys.contains(key)) }
                #expect(["mem", "io"].contains(bar["kind"] as? String))
            }
        }
    }

    @Test(arguments: ["01:00", "zz:00.0", "0000:01:20.0", "0000:01:00.8"])
    func badAddressIsAOneLineError(address: String) throws {
        let result = try VfioctlBinary.run(["show", address])
        #expect(result.status != 0)
        #expect(result.stdout.isEmpty)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(result.stderr)")
        #expect(result.stderr.contains("expected DDDD:BB:DD.F or BB:DD.F"))
    }

    @Test func unknownDeviceIsAOneLineError() throws {
        let result = try VfioctlBinary.run(["show", "0000:7e:1f.7"])
        #expect(result.status != 0)
        #expect(result.stderr.split(separator: "\n").count == 1)
        #expect(result.stderr.contains("no PCI device 0000:7e:1f.7"))
        #expect(result.stderr.contains("vfioctl list"))
    }

    @Test func missingSysfsRootIsAOneLineError() throws {
        let result = try VfioctlBinary.run(["list"], environment: ["VFIOCTL_SYSFS_ROOT": "/nonexistent-sysfs"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("/nonexistent-sysfs/bus/pci/devices"))
        #expect(result.stderr.split(separator: "\n").count == 1)
    }
}
