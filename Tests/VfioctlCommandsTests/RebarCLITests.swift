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

    /// `bind --rebar` on the GPU given a host driver: refused with the bridge window's numbers
    /// (exit 3, the bind's JSON array, nothing written); `--rebar-bar` without `--rebar` is a
    /// usage error; on vfio-pci already, the resize could not happen and is refused.
    @Test func bindWithRebarRefusesWhatTheWindowCannotHold() throws {
        var host = Self.host
        host.devices = host.devices.map { device in
            guard device.address == GPUWorkstation.gpu else { return device }
            var device = device
            device.driver = "nouveau"
            device.driverOverride = nil
            return device
        }
        try withTemporarySysfsTree(host) { tree in
            let state = tree.rootPath + "-state"
            defer { try? FileManager.default.removeItem(atPath: state) }
            let refused = try VfioctlBinary.run(["bind", "01:00.0", "--rebar", "max", "--json", "--sysfs-root", tree.rootPath, "--state-dir", state])
            #expect(refused.status == 3, "\(refused.stderr)")
            let array = try #require(try JSONSerialization.jsonObject(with: Data(refused.stdout.utf8)) as? [[String: Any]])
            #expect(array.first?["action"] as? String == "refused")
            #expect((array.first?["reason"] as? String)?.contains("prefetchable window is 288 MiB") == true)
            #expect((array.first?["bar_changes"] as? [Any])?.isEmpty == true)
            #expect(!FileManager.default.fileExists(atPath: state + "/journal.jsonl"))
            let usage = try VfioctlBinary.run(["bind", "01:00.0", "--rebar-bar", "1", "--sysfs-root", tree.rootPath, "--state-dir", state])
            #expect(usage.status == 64)
        }
        try withTemporarySysfsTree(Self.host) { tree in
            let onVFIO = try VfioctlBinary.run(["bind", "01:00.0", "--rebar", "max", "--sysfs-root", tree.rootPath, "--state-dir", tree.rootPath + "-state"])
            #expect(onVFIO.status == 3)
            #expect(onVFIO.stdout.contains("on vfio-pci already"))
        }
    }
}
