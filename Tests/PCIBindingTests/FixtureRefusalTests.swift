import Foundation
import SysfsFixtures
import Testing
@testable import PCIBinding
@testable import PCIInventory

/// The GPU workstation tree plus what a live host would add: the NVMe's namespace as a block
/// device mounted on /data (through /proc/self/mountinfo and /sys/dev/block), and the I225-V as
/// enp3s0, up with an address route. Reads them through the same code as on a real host.
struct HostWithUsers {
    let tree: TemporarySysfsTree
    let procRoot: String

    init() throws {
        tree = try TemporarySysfsTree.create(.gpuWorkstation)
        let root = tree.rootPath
        let manager = FileManager.default
        func devicePath(_ address: FixtureAddress) throws -> String {
            try manager.destinationOfSymbolicLink(atPath: "\(root)/bus/pci/devices/\(address)")
                .replacingOccurrences(of: "../../../", with: "")
        }
        // /sys/class/block/nvme0n1 and /sys/dev/block/259:0, as the kernel links them.
        let nvme = try devicePath(GPUWorkstation.nvme)
        try manager.createDirectory(atPath: "\(root)/\(nvme)/nvme/nvme0/nvme0n1", withIntermediateDirectories: true)
        try manager.createDirectory(atPath: "\(root)/class/block", withIntermediateDirectories: true)
        try manager.createDirectory(atPath: "\(root)/dev/block", withIntermediateDirectories: true)
        try manager.createSymbolicLink(atPath: "\(root)/class/block/nvme0n1", withDestinationPath: "../../\(nvme)/nvme/nvme0/nvme0n1")
        try manager.createSymbolicLink(atPath: "\(root)/dev/block/259:0", withDestinationPath: "../../\(nvme)/nvme/nvme0/nvme0n1")
        // /sys/class/net/enp3s0 on the I225-V, administratively up.
        let nic = try devicePath(GPUWorkstation.ethernet)
        try manager.createDirectory(atPath: "\(root)/\(nic)/net/enp3s0", withIntermediateDirectories: true)
        try "0x1003\n".write(toFile: "\(root)/\(nic)/net/enp3s0/flags", atomically: true, encoding: .utf8)
        try "up\n".write(toFile: "\(root)/\(nic)/net/enp3s0/operstate", atomically: true, encoding: .utf8)
        try manager.createSymbolicLink(atPath: "\(root)/\(nic)/net/enp3s0/device", withDestinationPath: "../../../\(GPUWorkstation.ethernet)")
        try manager.createDirectory(atPath: "\(root)/class/net", withIntermediateDirectories: true)
        try manager.createSymbolicLink(atPath: "\(root)/class/net/enp3s0", withDestinationPath: "../../\(nic)/net/enp3s0")
        // A proc root: the namespace mounted on /data, and a connected route on enp3s0.
        procRoot = root + "-proc"
        try manager.createDirectory(atPath: "\(procRoot)/self", withIntermediateDirectories: true)
        try manager.createDirectory(atPath: "\(procRoot)/net", withIntermediateDirectories: true)
        try "22 1 0:21 / /proc rw - proc proc rw\n31 1 259:0 / /data rw,relatime - ext4 /dev/nvme0n1 rw\n"
            .write(toFile: "\(procRoot)/self/mountinfo", atomically: true, encoding: .utf8)
        try "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\nenp3s0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
            .write(toFile: "\(procRoot)/net/route", atomically: true, encoding: .utf8)
    }

    func remove() {
        try? tree.remove()
        try? FileManager.default.removeItem(atPath: procRoot)
    }
}

@Suite struct FixtureRefusalTests {
    @Test func hostFactsReadFromTheTree() throws {
        let host = try HostWithUsers()
        defer { host.remove() }
        let facts = HostFactsReader(sysfs: SysfsRoot(path: host.tree.rootPath), procRoot: host.procRoot).read()
        #expect(facts.mounts.map(\.mountPoint) == ["/data"])
        let nvmeAddress = try PCIAddress(parsing: GPUWorkstation.nvme.description)
        let nicAddress = try PCIAddress(parsing: GPUWorkstation.ethernet.description)
        // Every function on the path carries the disk: the root port above it too.
        let rootPort = try PCIAddress(parsing: GPUWorkstation.nvmeRootPort.description)
        #expect(facts.mounts.first?.pciDevices == [rootPort, nvmeAddress])
        let nic = try #require(facts.interfaces.first { $0.name == "enp3s0" })
        #expect(nic.isUp && nic.pciDevice == nicAddress)
        #expect(nic.routes == ["10.0.2.0/24"])
    }

    @Test func plansRefuseWhatTheHostUsesAndNameTheEvidence() throws {
        let host = try HostWithUsers()
        defer { host.remove() }
        let root = SysfsRoot(path: host.tree.rootPath)
        let inventory = try PCIInventory.scan(root: root, detail: .full)
        let facts = HostFactsReader(sysfs: root, procRoot: host.procRoot).read()
        func plan(_ address: FixtureAddress, group: Bool = false, force: Bool = false) throws -> BindPlan {
            try BindPlan.bind(try PCIAddress(parsing: address.description), wholeGroup: group, force: force, inventory: inventory, facts: facts)
        }
        let nvme = try plan(GPUWorkstation.nvme)
        #expect(nvme.isRefused)
        #expect(nvme.steps.first?.reasons.contains { $0.contains("/dev/nvme0n1") && $0.contains("on /data") } == true)
        let nic = try plan(GPUWorkstation.ethernet)
        #expect(nic.steps.first?.reasons.contains { $0.contains("enp3s0") && $0.contains("10.0.2.0/24") } == true)
        #expect(try plan(GPUWorkstation.integratedGraphics).steps.first?.reasons.first?.contains("boot_vga=1") == true)
        #expect(try plan(GPUWorkstation.pegRootPort).steps.first?.reasons.first?.contains("bridge") == true)
        // Forced, the same bind is planned, with the evidence kept as a warning.
        let forced = try plan(GPUWorkstation.nvme, force: true)
        #expect(!forced.isRefused && forced.steps.first?.action == .bind)
        #expect(forced.steps.first?.reasons.first?.hasPrefix("forced:") == true)
        // The GPU's group is already on vfio-pci: nothing to do, nothing refused.
        let gpu = try plan(GPUWorkstation.gpu, group: true)
        #expect(gpu.steps.map(\.action) == [.unchanged, .unchanged])
        // A group bind that includes a refused member is refused whole: behind the switch, the
        // downstream ports are bridges (left out) and the endpoints are safe to take.
        let behindSwitch = try plan(GPUWorkstation.usbBehindSwitch, group: true)
        #expect(!behindSwitch.isRefused)
        #expect(behindSwitch.steps.count == 2)
    }

    @Test func theCLIRefusesAndChangesNothing() throws {
        let host = try HostWithUsers()
        defer { host.remove() }
        let state = host.tree.rootPath + "-state"
        defer { try? FileManager.default.removeItem(atPath: state) }
        let overridePath = "\(host.tree.rootPath)/bus/pci/devices/\(GPUWorkstation.nvme)/driver_override"
        let before = try String(contentsOfFile: overridePath, encoding: .utf8)
        let result = try VfioctlBinary.run(["--sysfs-root", host.tree.rootPath, "bind", GPUWorkstation.nvme.description,
                                            "--proc-root", host.procRoot, "--state-dir", state, "--json"])
        #expect(result.status == 3, "\(result.stderr)")
        #expect(result.stdout.contains("\"action\" : \"refused\""))
        #expect(result.stdout.contains("on /data"))
        #expect(try String(contentsOfFile: overridePath, encoding: .utf8) == before)
        #expect(!FileManager.default.fileExists(atPath: state + "/journal.json"))
    }
}
