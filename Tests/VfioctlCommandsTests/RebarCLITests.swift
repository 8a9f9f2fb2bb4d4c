import Foundation
import SysfsFixtures
import Testing

/// `show` and `rebar` end to end on the workstation whose GPU has a resizable BAR1 (256 MiB now,
/// 256 MiB-32 GiB offered) and stays on vfio-pci, as the fixture has it.
@Suite struct RebarCLITests {
    static var host: FixtureHost {
        var host = FixtureHost.gpuWorkstation
        host.devices = host.devices.map { device in
            guard device.address == GPUWorkstation.gpu else { return device }
            var device = device
            device.resizableBARs = [.sizes(1, codes: 8...15)]
            return device
        }
        return host
    }

    @Test func showListsTheResizableBAR() throws {
        try withTemporarySysfsTree(Self.host) { tree in
            let text = try VfioctlBinary.run(["show", "01:00.0", "--sysfs-root", tree.rootPath])
            #expect(text.status == 0, "\(text.stderr)")
            #expect(text.stdout.contains("Resizable BAR1: 256 MiB now; supports 256 MiB-32 GiB (8 sizes) through resource1_resize"))
            let json = try VfioctlBinary.run(["show", "01:00.0", "--json", "--sysfs-root", tree.rootPath])
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
            let entries = try #require(object["resizable_bars"] as? [[String: Any]])
            #expect(entries.count == 1)
            #expect(entries.first?["current_size"] as? UInt64 == 256 << 20)
            #expect((entries.first?["kernel_sizes"] as? [UInt64])?.last == 32 << 30)
        }
    }

    @Test func rebarRefusesABoundDeviceAndBadSizes() throws {
        try withTemporarySysfsTree(Self.host) { tree in
            let state = tree.rootPath + "-state"
            defer { try? FileManager.default.removeItem(atPath: state) }
            let refused = try VfioctlBinary.run(["rebar", "01:00.0", "--bar", "1", "--size", "max", "--json",
                                                 "--sysfs-root", tree.rootPath, "--state-dir", state])
            #expect(refused.status == 3, "\(refused.stderr)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(refused.stdout.utf8)) as? [String: Any])
            #expect(object["status"] as? String == "refused")
            #expect((object["reason"] as? String)?.contains("bound to vfio-pci") == true)
            #expect(object["to"] is NSNull)
            // Not a power of two, and past the BARs: usage errors.
            let odd = try VfioctlBinary.run(["rebar", "01:00.0", "--bar", "1", "--size", "3G", "--sysfs-root", tree.rootPath, "--state-dir", state])
            #expect(odd.status == 64)
            let badBAR = try VfioctlBinary.run(["rebar", "01:00.0", "--bar", "7", "--size", "1G", "--sysfs-root", tree.rootPath, "--state-dir", state])
            #expect(badBAR.status == 64)
        }
    }
}
