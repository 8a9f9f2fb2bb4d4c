#if canImport(Glibc)
import Glibc
#endif
import CLinuxUAPI
import PCIInventory
import SystemPackage

/// Reads what `HolderMatcher` judges: the device nodes that belong to a PCI device (from sysfs)
/// and the device nodes and resource mappings of every process (from procfs), each under its
/// own root so fixture trees and a fake proc root read the same way as the host.
public struct HolderReader {
    /// The sysfs root device nodes are found under.
    public let sysfs: SysfsRoot
    /// The proc root processes are read from.
    public let procRoot: String
    /// Where the nvidia control node is looked up; nil skips it (a copied tree has no /dev).
    public let devRoot: String?
    let reader = SysfsReader()

    /// A reader of these roots.
    public init(sysfs: SysfsRoot, procRoot: String = "/proc", devRoot: String? = "/dev") {
        self.sysfs = sysfs
        self.procRoot = procRoot
        self.devRoot = devRoot
    }

    /// Holders of each of `addresses` (those without any are left out), reading the processes once.
    public func holders(of addresses: [PCIAddress], leavingVFIO: Bool = false) -> [PCIAddress: [Holder]] {
        guard !addresses.isEmpty else { return [:] }
        let uses = processes()
        var result: [PCIAddress: [Holder]] = [:]
        for address in addresses {
            let held = HolderMatcher.holders(of: address, nodes: nodes(of: address, leavingVFIO: leavingVFIO), among: uses)
            if !held.isEmpty { result[address] = held }
        }
        return result
    }

    /// Holders of every PCI device in the tree.
    public func holdersOfEveryDevice() -> [PCIAddress: [Holder]] {
        let names = reader.listDirectory(sysfs.appending("bus/pci/devices")) ?? []
        return holders(of: names.compactMap { try? PCIAddress(parsing: $0) })
    }

    // MARK: The device's nodes

    /// Every device node below the PCI function in sysfs (disks, partitions, DRM, sound, the
    /// driver's char devices, USB devices below a controller), the block devices stacked on its
    /// disks (dm, md), its VFIO group node when it is on a VFIO driver, and the nvidia nodes when it is
    /// on nvidia.
    /// `leavingVFIO`: the device is being removed from vfio-pci, whose driver link sysfs drops
    /// before the driver's remove runs (and waits for the group's users).
    public func nodes(of address: PCIAddress, leavingVFIO: Bool = false) -> [OwnedNode] {
        let devicePath = sysfs.appending("bus/pci/devices/\(address)")
        var nodes: [OwnedNode] = []
        var budget = Self.directoryBudget
        collect(in: devicePath, depth: 0, budget: &budget, into: &nodes)
        let driver = reader.readLinkBasename(devicePath + "/driver")
        if driver.map(GroupViability.isVFIODriver) == true || leavingVFIO, let group = reader.readLinkBasename(devicePath + "/iommu_group"), Int(group) != nil,
           let number = reader.readString(sysfs.appending("class/vfio/\(group)/dev")).flatMap(DeviceNumber.init(sysfsText:)) {
            nodes.append(OwnedNode(kind: .char, number: number, name: "/dev/vfio/\(group)"))
        }
        if driver == "nvidia" { nodes += nvidiaNodes(of: address) }
        return Array(Set(nodes)).sorted { ($0.number, $0.name) < ($1.number, $1.name) }
    }

    /// Bounds the sysfs walk below one function (a USB controller with hubs is the deepest).
    static let directoryBudget = 4096
    static let maximumDepth = 12

    func collect(in directory: String, depth: Int, budget: inout Int, into nodes: inout [OwnedNode]) {
        guard depth <= Self.maximumDepth, budget > 0 else { return }
        budget -= 1
        if depth > 0, let node = node(at: directory) {
            nodes.append(node)
            if node.kind == .block { stacked(on: directory, depth: 0, into: &nodes) }
        }
        for name in reader.listDirectory(directory) ?? [] {
            // Another PCI function (below a bridge) is judged on its own.
            if (try? PCIAddress(parsing: name)) != nil { continue }
            let path = directory + "/" + name
            // Only real directories: sysfs links (subsystem, driver, device) lead back up.
            var status = stat()
            guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFDIR else { continue }
            collect(in: path, depth: depth + 1, budget: &budget, into: &nodes)
        }
    }

    /// The node a sysfs device directory describes: its `dev` number, block or char by its
    /// subsystem, named by the DEVNAME of its uevent.
    func node(at directory: String) -> OwnedNode? {
        guard let number = reader.readString(directory + "/dev").flatMap(DeviceNumber.init(sysfsText:)) else { return nil }
        let kind: OwnedNode.Kind = reader.readLinkBasename(directory + "/subsystem") == "block" ? .block : .char
        var name = directory.split(separator: "/").last.map(String.init) ?? directory
        if let uevent = reader.readBytes(directory + "/uevent", limit: 4096).map({ String(decoding: $0, as: UTF8.self) }) {
            for line in uevent.split(separator: "\n") where line.hasPrefix("DEVNAME=") {
                let devname = line.dropFirst("DEVNAME=".count)
                // DEVNAME is relative to /dev; anything that would climb out of it is ignored.
                if !devname.isEmpty, !devname.split(separator: "/").contains("..") { name = "/dev/" + devname }
            }
        }
        return OwnedNode(kind: kind, number: number, name: name)
    }

    /// Block devices built on a disk or partition (`holders/`: device-mapper, md, bcache), and
    /// those built on them.
    func stacked(on directory: String, depth: Int, into nodes: inout [OwnedNode]) {
        guard depth < 8 else { return }
        for name in reader.listDirectory(directory + "/holders") ?? [] {
            let path = directory + "/holders/" + name
            guard let node = node(at: path) else { continue }
            nodes.append(node)
            stacked(on: path, depth: depth + 1, into: &nodes)
        }
    }

    /// /dev/nvidiaN of this GPU (the major the driver registered, from /proc/devices, and the
    /// minor the driver reports for the GPU) and /dev/nvidiactl, which every client of the driver
    /// opens and through which it reaches this GPU.
    func nvidiaNodes(of address: PCIAddress) -> [OwnedNode] {
        var nodes: [OwnedNode] = []
        let information = procRoot + "/driver/nvidia/gpus/\(address)/information"
        if let major = characterMajor(named: ["nvidia-frontend", "nvidia"]),
           let text = reader.readBytes(information, limit: 8192).map({ String(decoding: $0, as: UTF8.self) }) {
            for line in text.split(separator: "\n") where line.hasPrefix("Device Minor:") {
                if let minor = UInt32(line.dropFirst("Device Minor:".count).filter { $0 != " " && $0 != "\t" }) {
                    nodes.append(OwnedNode(kind: .char, number: DeviceNumber(major: major, minor: minor), name: "/dev/nvidia\(minor)"))
                }
            }
        }
        if let devRoot, let number = Self.deviceNumber(of: devRoot + "/nvidiactl", kind: .char) {
            nodes.append(OwnedNode(kind: .char, number: number, name: "/dev/nvidiactl"))
        }
        return nodes
    }

    /// The major of a character driver by its name in /proc/devices.
    func characterMajor(named names: [String]) -> UInt32? {
        guard let text = reader.readBytes(procRoot + "/devices", limit: 65536).map({ String(decoding: $0, as: UTF8.self) }) else { return nil }
        var inCharacterSection = false
        for line in text.split(separator: "\n") {
            if line.hasSuffix("devices:") { inCharacterSection = line.hasPrefix("Character"); continue }
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard inCharacterSection, fields.count == 2, names.contains(String(fields[1])) else { continue }
            return UInt32(fields[0])
        }
        return nil
    }

    /// A node's number when `path` (followed) is a device node of `kind`.
    static func deviceNumber(of path: String, kind wanted: OwnedNode.Kind? = nil) -> DeviceNumber? {
        guard let (kind, number) = deviceNode(at: path), wanted == nil || kind == wanted else { return nil }
        return number
    }

    static func deviceNode(at path: String) -> (OwnedNode.Kind, DeviceNumber)? {
        var status = stat()
        guard stat(path, &status) == 0 else { return nil }
        let kind: OwnedNode.Kind
        switch status.st_mode & S_IFMT {
        case S_IFBLK: kind = .block
        case S_IFCHR: kind = .char
        default: return nil
        }
        let device = UInt64(status.st_rdev)
        return (kind, DeviceNumber(major: cuapi_dev_major(device), minor: cuapi_dev_minor(device)))
    }

    // MARK: Processes

    /// Every process's open device nodes and mapped PCI resource files. Processes whose fds
    /// cannot be read (gone meanwhile, or another user's without root) are left out.
    public func processes() -> [ProcessUse] {
        let ownPID = procRoot == "/proc" ? getpid() : -1
        var uses: [ProcessUse] = []
        for name in reader.listDirectory(procRoot) ?? [] {
            guard let pid = Int32(name), pid > 0, pid != ownPID else { continue }
            let base = procRoot + "/" + name
            var use = ProcessUse(pid: pid, command: reader.readString(base + "/comm") ?? "?")
            for fdName in reader.listDirectory(base + "/fd") ?? [] {
                guard let fd = Int(fdName) else { continue }
                let path = base + "/fd/" + fdName
                guard let (kind, number) = Self.deviceNode(at: path) else { continue }
                use.openNodes.append(.init(fd: fd, path: reader.readLink(path) ?? path, kind: kind, number: number))
            }
            use.openNodes.sort { $0.fd < $1.fd }
            use.mappedResources = mappedResources(base + "/maps")
            if !use.openNodes.isEmpty || !use.mappedResources.isEmpty { uses.append(use) }
        }
        return uses
    }

    /// Paths in a maps file that name a sysfs PCI resource file. Read in chunks: a VMM's maps
    /// can be large, and only these lines matter.
    func mappedResources(_ path: String) -> [String] {
        guard let descriptor = try? FileDescriptor.open(path, .readOnly, options: [.closeOnExec]) else { return [] }
        defer { try? descriptor.close() }
        var found: Set<String> = []
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        func take(_ line: ArraySlice<UInt8>) {
            // maps: address perms offset dev inode pathname; the path starts at the first '/'.
            guard let slash = line.firstIndex(of: UInt8(ascii: "/")) else { return }
            let mapped = String(decoding: line[slash...], as: UTF8.self)
            if mapped.contains("/resource") { found.insert(mapped) }
        }
        // A maps file of 64 MiB is far beyond any real process; stop there.
        for _ in 0..<1024 {
            guard let count = try? chunk.withUnsafeMutableBytes({ try descriptor.read(into: $0) }), count > 0 else { break }
            pending += chunk[..<count]
            var start = pending.startIndex
            while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
                take(pending[start..<newline])
                start = newline + 1
            }
            pending.removeSubrange(..<start)
        }
        if !pending.isEmpty { take(pending[...]) }
        return found.sorted()
    }
}
