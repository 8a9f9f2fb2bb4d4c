import Foundation
import SysfsFixtures
import Testing
@testable import PCIBinding
@testable import PCIInventory

/// The GPU workstation with the device nodes a live host has below its NVMe (the controller's
/// char device, a namespace, a partition and a device-mapper volume on it) and the GPU's VFIO
/// group node, plus a proc root whose processes hold them. The fd links point at /dev/null and
/// /dev/zero, whose numbers (1:3, 1:5) the fixture gives the NVMe controller and the VFIO group:
/// the reader then sees real device numbers through stat, as on a host.
struct HostWithHolders {
    let tree: TemporarySysfsTree
    let procRoot: String
    let nvme: PCIAddress
    let gpu: PCIAddress

    init() throws {
        tree = try TemporarySysfsTree.create(.gpuWorkstation)
        let root = tree.rootPath
        let manager = FileManager.default
        nvme = try PCIAddress(parsing: GPUWorkstation.nvme.description)
        gpu = try PCIAddress(parsing: GPUWorkstation.gpu.description)
        func write(_ text: String, _ path: String) throws {
            try manager.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        func link(_ path: String, _ target: String) throws {
            try manager.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try manager.createSymbolicLink(atPath: path, withDestinationPath: target)
        }
        func node(_ directory: String, _ number: String, _ name: String, subsystem: String) throws {
            try write("\(number)\n", directory + "/dev")
            try write("MAJOR=\(number.split(separator: ":")[0])\nDEVNAME=\(name)\n", directory + "/uevent")
            try link(directory + "/subsystem", "../../../../../class/\(subsystem)")
        }
        let device = "\(root)/bus/pci/devices/\(nvme)/"
        let controller = device + "nvme/nvme0"
        try node(controller, "1:3", "nvme0", subsystem: "nvme")
        try node(controller + "/nvme0n1", "259:0", "nvme0n1", subsystem: "block")
        try node(controller + "/nvme0n1/nvme0n1p1", "259:1", "nvme0n1p1", subsystem: "block")
        let mapper = "\(root)/devices/virtual/block/dm-0"
        try node(mapper, "253:0", "dm-0", subsystem: "block")
        try link(controller + "/nvme0n1/nvme0n1p1/holders/dm-0", mapper)
        // The GPU is on vfio-pci in this fixture: its group's node.
        try write("1:5\n", "\(root)/class/vfio/\(GPUWorkstation.Group.gpu)/dev")

        procRoot = root + "-proc"
        try HostEnvironment.writeMountTable(procRoot: procRoot)
        func process(_ pid: Int, _ command: String, fds: [Int: String], maps: String = "") throws {
            try write(command + "\n", "\(procRoot)/\(pid)/comm")
            try manager.createDirectory(atPath: "\(procRoot)/\(pid)/fd", withIntermediateDirectories: true)
            for (fd, target) in fds { try link("\(procRoot)/\(pid)/fd/\(fd)", target) }
            try write(maps, "\(procRoot)/\(pid)/maps")
        }
        try process(4242, "holder", fds: [0: "/dev/full", 3: "/dev/null"])
        try process(4343, "qemu-system-x86", fds: [7: "/dev/zero"], maps: """
            55d4c8a00000-55d4c8a2c000 r--p 00000000 fe:01 1835088                    /usr/bin/qemu-system-x86_64
            7f3d80f80000-7f3d81f80000 rw-s 00000000 00:15 4521                       /sys/devices/pci0000:00/0000:00:01.0/\(gpu)/resource1
            7f3d81f80000-7f3d81f90000 rw-s 00000000 00:15 4522                       /sys/devices/pci0000:00/0000:00:1b.0/\(nvme)/config

            """)
        // A process that holds nothing of interest.
        try process(5000, "bash", fds: [0: "/dev/full", 1: "/etc/hostname"])
    }

    var reader: HolderReader { HolderReader(sysfs: SysfsRoot(path: tree.rootPath), procRoot: procRoot, devRoot: nil) }

    func remove() {
        try? tree.remove()
        try? FileManager.default.removeItem(atPath: procRoot)
    }
}

@Suite struct HolderMatcherTests {
    let address = try! PCIAddress(parsing: "0000:02:00.0")
    let disk = OwnedNode(kind: .block, number: DeviceNumber(major: 259, minor: 0), name: "/dev/nvme0n1")

    @Test func matchesByNumberAndKindNotByName() {
        let processes = [
            ProcessUse(pid: 20, command: "dd", openNodes: [.init(fd: 4, path: "/dev/disk/by-id/nvme-x", kind: .block, number: disk.number)]),
            // The same numbers on a char device are another device.
            ProcessUse(pid: 10, command: "other", openNodes: [.init(fd: 3, path: "/dev/nvme0n1", kind: .char, number: disk.number)]),
            ProcessUse(pid: 30, command: "cat", openNodes: [.init(fd: 0, path: "/dev/nvme0n1", kind: .block, number: disk.number)]),
        ]
        let holders = HolderMatcher.holders(of: address, nodes: [disk], among: processes)
        #expect(holders.map(\.pid) == [20, 30])
        #expect(holders[0].description == "pid 20 (dd) has /dev/disk/by-id/nvme-x = /dev/nvme0n1 (block 259:0) open as fd 4")
        #expect(holders[1].description == "pid 30 (cat) has /dev/nvme0n1 (block 259:0) open as fd 0")
    }

    @Test func resourceMappingsOfThisDeviceOnly() throws {
        #expect(HolderMatcher.isResource("/sys/devices/pci0000:00/0000:00:1b.0/0000:02:00.0/resource0", of: address))
        #expect(HolderMatcher.isResource("/sys/devices/pci0000:00/0000:02:00.0/resource2_wc", of: address))
        #expect(!HolderMatcher.isResource("/sys/devices/pci0000:00/0000:02:00.0/config", of: address))
        #expect(!HolderMatcher.isResource("/sys/devices/pci0000:00/0000:02:00.0/resource", of: address))
        #expect(!HolderMatcher.isResource("/sys/devices/pci0000:00/0000:02:00.1/resource0", of: address))
        #expect(!HolderMatcher.isResource("/home/user/0000:02:00.0/resource0x", of: address))
        let mapper = ProcessUse(pid: 7, command: "lspci", mappedResources: ["/sys/devices/pci0000:00/0000:02:00.0/resource0",
                                                                             "/sys/devices/pci0000:00/0000:02:00.1/resource0"])
        let holders = HolderMatcher.holders(of: address, nodes: [], among: [mapper])
        #expect(holders.map(\.what) == ["/sys/devices/pci0000:00/0000:02:00.0/resource0 mapped"])
    }

    @Test func unbindPlansRefuseHeldDevicesUnlessForced() throws {
        let step = BindPlan.Step(address: address, fromDriver: "vfio-pci", toDriver: "nvme", action: .unbind, reasons: [])
        let plan = BindPlan(steps: [step], remainingBlockers: [], group: 9)
        let held = [address: [Holder(pid: 99, command: "qemu", what: "/dev/vfio/9 (char 244:0) open as fd 12")]]
        #expect(!plan.refusingHeld([:], force: false).isRefused)
        let refused = plan.refusingHeld(held, force: false)
        #expect(refused.isRefused)
        #expect(refused.steps[0].reasons[0].contains("pid 99 (qemu) has /dev/vfio/9"))
        let forced = plan.refusingHeld(held, force: true)
        #expect(!forced.isRefused && forced.steps[0].action == .unbind)
        #expect(forced.steps[0].reasons.last?.hasPrefix("forced: ") == true)
    }

    @Test func deviceNumbersParseOnlyWhatSysfsWrites() {
        #expect(DeviceNumber(sysfsText: "259:0") == DeviceNumber(major: 259, minor: 0))
        #expect(DeviceNumber(sysfsText: "259") == nil)
        #expect(DeviceNumber(sysfsText: "a:1") == nil)
        #expect(DeviceNumber(sysfsText: "1:2:3") == nil)
        #expect(DeviceNumber(sysfsText: "-1:2") == nil)
    }
}

@Suite struct HolderReaderTests {
    @Test func nodesOfADeviceFollowSysfsAndStackedDisks() throws {
        let host = try HostWithHolders()
        defer { host.remove() }
        let nodes = host.reader.nodes(of: host.nvme)
        #expect(nodes.map(\.description) == [
            "/dev/nvme0 (char 1:3)", "/dev/dm-0 (block 253:0)", "/dev/nvme0n1 (block 259:0)", "/dev/nvme0n1p1 (block 259:1)",
        ])
        // On vfio-pci: its group's node; another device has none of these.
        #expect(host.reader.nodes(of: host.gpu).map(\.description) == ["/dev/vfio/8 (char 1:5)"])
        #expect(host.reader.nodes(of: try PCIAddress(parsing: GPUWorkstation.ethernet.description)).isEmpty)
    }

    @Test func processesAreReadThroughStatOfTheirFds() throws {
        let host = try HostWithHolders()
        defer { host.remove() }
        let uses = host.reader.processes().sorted { $0.pid < $1.pid }
        #expect(uses.map(\.pid) == [4242, 4343, 5000])
        #expect(uses[0].openNodes.map { "\($0.fd) \($0.kind.rawValue) \($0.number)" } == ["0 char 1:7", "3 char 1:3"])
        #expect(uses[1].mappedResources.count == 1)
        let holders = host.reader.holders(of: [host.nvme, host.gpu])
        #expect(holders[host.nvme]?.map(\.description) == ["pid 4242 (holder) has /dev/null = /dev/nvme0 (char 1:3) open as fd 3"])
        #expect(holders[host.gpu]?.map(\.pid) == [4343, 4343])
        #expect(holders[host.gpu]?.last?.what.hasSuffix("\(host.gpu)/resource1 mapped") == true)
    }

    @Test func bindIsRefusedWhileHeldAndForcedNamesTheHolder() throws {
        let host = try HostWithHolders()
        defer { host.remove() }
        let root = SysfsRoot(path: host.tree.rootPath)
        let inventory = try PCIInventory.scan(root: root, detail: .full)
        let facts = HostFactsReader(sysfs: root, procRoot: host.procRoot).read()
        let plan = try BindPlan.bind(host.nvme, wholeGroup: false, force: false, inventory: inventory, facts: facts)
        #expect(plan.isRefused)
        #expect(plan.steps[0].reasons.contains { $0.contains("is in use: pid 4242 (holder) has /dev/null = /dev/nvme0") })
        let forced = try BindPlan.bind(host.nvme, wholeGroup: false, force: true, inventory: inventory, facts: facts)
        #expect(forced.steps[0].action == .bind && forced.steps[0].reasons.contains { $0.hasPrefix("forced: ") && $0.contains("pid 4242") })
        // The NIC is held by nobody and carries nothing: not refused.
        let nic = try PCIAddress(parsing: GPUWorkstation.ethernet.description)
        #expect(!(try BindPlan.bind(nic, wholeGroup: false, force: false, inventory: inventory, facts: facts)).isRefused)
    }

    @Test func theCLIRefusesUnbindOfAHeldDeviceAndShowNamesHolders() throws {
        let host = try HostWithHolders()
        defer { host.remove() }
        let state = host.tree.rootPath + "-state"
        defer { try? FileManager.default.removeItem(atPath: state) }
        let overridePath = "\(host.tree.rootPath)/bus/pci/devices/\(host.gpu)/driver_override"
        let before = try String(contentsOfFile: overridePath, encoding: .utf8)
        let unbind = try VfioctlBinary.run(["--sysfs-root", host.tree.rootPath, "unbind", host.gpu.description,
                                            "--proc-root", host.procRoot, "--state-dir", state])
        #expect(unbind.status == 3, "\(unbind.stderr)")
        #expect(unbind.stdout.contains("refused") && unbind.stdout.contains("pid 4343 (qemu-system-x86) has /dev/zero = /dev/vfio/8"))
        #expect(try String(contentsOfFile: overridePath, encoding: .utf8) == before)
        let dryForced = try VfioctlBinary.run(["--sysfs-root", host.tree.rootPath, "unbind", host.gpu.description, "--force",
                                               "--dry-run", "--proc-root", host.procRoot, "--state-dir", state])
        #expect(dryForced.status == 0 && dryForced.stdout.contains("would-unbind"), "\(dryForced.stdout)\(dryForced.stderr)")

        let show = try VfioctlBinary.run(["--sysfs-root", host.tree.rootPath, "show", host.nvme.description, "--proc-root", host.procRoot])
        #expect(show.status == 0)
        #expect(show.stdout.contains("Held by:\n    pid 4242 (holder) has /dev/null = /dev/nvme0 (char 1:3) open as fd 3"))
        let json = try VfioctlBinary.run(["--sysfs-root", host.tree.rootPath, "show", host.gpu.description, "--proc-root", host.procRoot, "--json"])
        #expect(json.stdout.contains("\"command\" : \"qemu-system-x86\""))
        let free = try VfioctlBinary.run(["--sysfs-root", host.tree.rootPath, "show", GPUWorkstation.ethernet.description, "--proc-root", host.procRoot])
        #expect(free.stdout.contains("Held by:         nobody"))
    }
}
