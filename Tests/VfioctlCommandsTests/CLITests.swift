import Foundation
import SysfsFixtures
import Testing

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
    func badAddressIsAUsageError(address: String) throws {
        let result = try VfioctlBinary.run(["show", address])
        #expect(result.status == 64)
        #expect(result.stdout.isEmpty)
        // ArgumentParser names the value and the argument, then its help: the expected form.
        #expect(result.stderr.hasPrefix("Error: The value '\(address)' is invalid for '<address>'"), "\(result.stderr)")
        #expect(result.stderr.contains("DDDD:BB:DD.F or BB:DD.F in hex, function 0-7"))
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

    /// The checks that moved to vfioctl-lab-probe keep their old names: vfioctl runs the probe
    /// installed beside it (the build folder has both), and says where they went when it is not.
    @Test func movedChecksRunTheProbeBesideVfioctl() throws {
        let forwarded = try VfioctlBinary.run(["vm", "smoke", "--help"])
        #expect(forwarded.status == 0, "\(forwarded.stderr)")
        #expect(forwarded.stdout.contains("vfioctl-lab-probe vm-smoke"), "\(forwarded.stdout)")
        let binary = try #require(VfioctlBinary.url)
        let alone = FileManager.default.temporaryDirectory.appendingPathComponent("vfioctl-alone-\(getpid())")
        try FileManager.default.createDirectory(at: alone, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: alone) }
        let copy = alone.appendingPathComponent("vfioctl")
        try FileManager.default.copyItem(at: binary, to: copy)
        for (arguments, moved) in [(["dma", "p2p", "01:00.0"], "vfioctl-lab-probe p2p"), (["vm", "dma-smoke", "01:00.0"], "vfioctl-lab-probe vm-dma-smoke")] {
            let result = try VfioctlBinary.runProgram(copy, arguments)
            #expect(result.status == 1)
            #expect(result.stderr.contains("moved to `\(moved)`"), "\(result.stderr)")
        }
    }
}
