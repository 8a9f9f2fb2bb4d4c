import Foundation
import Testing
@testable import PCIBinding
@testable import PCIInventory

@Suite struct BindSafetyTests {
    func device(_ address: String, class classCode: UInt32 = 0x020000, bootVGA: Bool? = nil) throws -> PCIDevice {
        var device = PCIDevice(address: try PCIAddress(parsing: address))
        device.classCode = classCode
        device.bootVGA = bootVGA
        return device
    }

    @Test func aPlainDeviceIsSafe() throws {
        #expect(BindSafety.refusals(for: try device("01:00.0"), facts: HostFacts()).isEmpty)
    }

    /// Without the mount table no device can be cleared of the root disk: every bind and
    /// `persist add` is refused (exit 3) until it can be read, or --force.
    @Test func anUnreadableMountTableRefusesEveryDevice() throws {
        let directory = NSTemporaryDirectory() + "vfioctl-mounts-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: directory + "/proc/self", withIntermediateDirectories: true)
        #expect(mkfifo(directory + "/proc/self/mountinfo", 0o600) == 0)
        let started = Date()
        let facts = HostFactsReader(sysfs: SysfsRoot(path: directory + "/sys"), procRoot: directory + "/proc").read()
        #expect(Date().timeIntervalSince(started) < 5, "a FIFO as mountinfo was waited on")
        #expect(facts.mountsUnreadable?.contains("FIFO") == true, "\(facts.mountsUnreadable ?? "read")")
        let refusals = BindSafety.refusals(for: try device("01:00.0"), facts: facts)
        #expect(refusals.map(\.kind) == [.mountsUnknown])
        #expect(refusals.first?.evidence.contains("--force") == true)
        #expect(BindSafety.refusals(for: try device("01:00.0"), facts: HostFacts()).isEmpty)
    }

    @Test func rootAndMountedFilesystemsAreRefusedWithTheMountPoint() throws {
        let nvme = try device("02:00.0", class: 0x010802)
        var facts = HostFacts()
        facts.mounts = [
            MountFact(mountPoint: "/", source: "/dev/nvme0n1p2", blockDevice: "nvme0n1p2", pciDevices: [nvme.address]),
            MountFact(mountPoint: "/data", source: "/dev/mapper/vg-data", blockDevice: "dm-0",
                      pciDevices: [nvme.address, try PCIAddress(parsing: "03:00.0")]),
        ]
        let refusals = BindSafety.refusals(for: nvme, facts: facts)
        #expect(refusals.map(\.kind) == [.mountedFilesystem, .mountedFilesystem])
        #expect(refusals[0].evidence.contains("the root filesystem"))
        #expect(refusals[0].evidence.contains("/dev/nvme0n1p2"))
        #expect(refusals[1].evidence.contains("on /data"))
        // The other disk under the same LVM volume is refused too.
        #expect(BindSafety.refusals(for: try device("03:00.0", class: 0x010802), facts: facts).count == 1)
        #expect(BindSafety.refusals(for: try device("04:00.0", class: 0x010802), facts: facts).isEmpty)
    }

    @Test func swapIsRefused() throws {
        let disk = try device("05:00.0", class: 0x010601)
        var facts = HostFacts()
        facts.swaps = [SwapFact(path: "/dev/sda3", blockDevice: "sda3", pciDevices: [disk.address])]
        #expect(BindSafety.refusals(for: disk, facts: facts).map(\.kind) == [.activeSwap])
    }

    @Test func networkRefusedOnlyWhenUpWithAddressOrRoute() throws {
        let nic = try device("06:00.0")
        func facts(up: Bool, addresses: [String], routes: [String]) -> HostFacts {
            var facts = HostFacts()
            facts.interfaces = [NetworkInterfaceFact(name: "enp6s0", pciDevice: nic.address, isUp: up, addresses: addresses, routes: routes)]
            return facts
        }
        #expect(BindSafety.refusals(for: nic, facts: facts(up: false, addresses: ["10.0.0.2"], routes: ["default"])).isEmpty)
        #expect(BindSafety.refusals(for: nic, facts: facts(up: true, addresses: [], routes: [])).isEmpty)
        let withRoute = BindSafety.refusals(for: nic, facts: facts(up: true, addresses: [], routes: ["default"]))
        #expect(withRoute.map(\.kind) == [.networkInUse])
        #expect(withRoute.first?.evidence.contains("enp6s0") == true)
        #expect(withRoute.first?.evidence.contains("default") == true)
        let withAddress = BindSafety.refusals(for: nic, facts: facts(up: true, addresses: ["192.0.2.7"], routes: []))
        #expect(withAddress.first?.evidence.contains("192.0.2.7") == true)
    }

    @Test func bootDisplayFramebufferAndBridgeAreRefused() throws {
        let vga = try device("00:02.0", class: 0x030000, bootVGA: true)
        var facts = HostFacts()
        facts.framebuffers = [FramebufferFact(name: "fb0", driverName: "i915drmfb", pciDevice: vga.address)]
        facts.framebufferConsoleActive = true
        let refusals = BindSafety.refusals(for: vga, facts: facts)
        #expect(refusals.map(\.kind) == [.bootDisplay, .framebufferConsole])
        #expect(refusals[1].evidence.contains("fb0") && refusals[1].evidence.contains("console"))
        #expect(BindSafety.refusals(for: try device("00:02.0", class: 0x030000, bootVGA: false), facts: HostFacts()).isEmpty)
        #expect(BindSafety.refusals(for: try device("00:1c.0", class: 0x060400), facts: HostFacts()).map(\.kind) == [.bridge])
    }

    @Test func mountinfoEscapesAreDecoded() {
        #expect(unescapeMountField("/mnt/with\\040space") == "/mnt/with space")
        #expect(unescapeMountField("/plain") == "/plain")
        #expect(unescapeMountField("/odd\\") == "/odd\\")
    }
}

/// The facts of this real machine: its root filesystem and routed interface must be refused.
@Suite struct LiveHostFactsTests {
    @Test func theRootFilesystemDeviceIsRefused() throws {
        let facts = HostFactsReader(sysfs: .system).read()
        guard let root = facts.mounts.first(where: { $0.mountPoint == "/" }) else {
            // A root on no PCI device (overlay, network): nothing to assert about PCI.
            let text = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
            let rootLine = text.split(separator: "\n").first { $0.split(separator: " ").dropFirst(4).first == "/" }
            #expect(rootLine.map { $0.split(separator: " ")[2].hasPrefix("0:") } ?? true,
                    "the root is on a block device but was not traced to PCI: \(rootLine ?? "")")
            return
        }
        let inventory = try PCIInventory.scan(root: .system, detail: .full)
        for address in root.pciDevices {
            let device = try #require(inventory.device(address))
            let refusals = BindSafety.refusals(for: device, facts: facts)
            #expect(refusals.contains { $0.kind == .mountedFilesystem && $0.evidence.contains("root filesystem") })
        }
    }

    @Test func theRoutedInterfaceIsRefused() throws {
        let facts = HostFactsReader(sysfs: .system).read()
        let routed = facts.interfaces.filter { $0.pciDevice != nil && $0.isUp && !$0.routes.isEmpty }
        let inventory = try PCIInventory.scan(root: .system, detail: .full)
        for interface in routed {
            let address = try #require(interface.pciDevice)
            let device = try #require(inventory.device(address))
            #expect(BindSafety.refusals(for: device, facts: facts).contains { $0.kind == .networkInUse })
        }
        // Cross-check the route table: every interface with a route in /proc/net/route is seen.
        let table = (try? String(contentsOfFile: "/proc/net/route", encoding: .utf8)) ?? ""
        let names = Set(table.split(separator: "\n").dropFirst().compactMap { $0.split(separator: "\t").first.map(String.init) })
        for name in names where name != "lo" {
            #expect(facts.interfaces.first { $0.name == name }?.routes.isEmpty == false, "\(name) has routes")
        }
    }
}
