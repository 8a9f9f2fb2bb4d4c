import PCIInventory

/// A device number (dev_t) as the kernel splits it: what a `dev` file in sysfs says ("259:0")
/// and what fstat(2) of an open device node gives as st_rdev.
public struct DeviceNumber: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The major number.
    public let major: UInt32
    /// The minor number.
    public let minor: UInt32

    /// A device number from its parts.
    public init(major: UInt32, minor: UInt32) {
        self.major = major
        self.minor = minor
    }

    /// Parses "MAJOR:MINOR" as sysfs `dev` attributes print it; nil for anything else.
    public init?(sysfsText text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let major = UInt32(parts[0]), let minor = UInt32(parts[1]) else { return nil }
        self.init(major: major, minor: minor)
    }

    /// "MAJOR:MINOR".
    public var description: String { "\(major):\(minor)" }

    /// Ordered by major, then minor.
    public static func < (lhs: DeviceNumber, rhs: DeviceNumber) -> Bool {
        (lhs.major, lhs.minor) < (rhs.major, rhs.minor)
    }
}

/// A block or character device node that belongs to one PCI device: a disk and its partitions
/// (and the stacked devices built on them), a DRM or sound node, the driver's own char device,
/// the nvidia nodes, the device's VFIO group.
public struct OwnedNode: Hashable, Sendable, CustomStringConvertible {
    /// Block or character device.
    public enum Kind: String, Sendable {
        case block, char
    }

    /// Block or character.
    public let kind: Kind
    /// Its device number.
    public let number: DeviceNumber
    /// Its /dev path (from the kernel's DEVNAME), or what it is when it has none.
    public let name: String

    /// A node of `kind` with `number`, called `name`.
    public init(kind: Kind, number: DeviceNumber, name: String) {
        self.kind = kind
        self.number = number
        self.name = name
    }

    /// "name (kind major:minor)".
    public var description: String { "\(name) (\(kind.rawValue) \(number))" }
}

/// What one process has open or mapped that could belong to a device: the device nodes among
/// its open files (by number, as fstat reports them) and the sysfs resource files it maps.
public struct ProcessUse: Sendable, Equatable {
    /// A device node among the process's open files.
    public struct OpenNode: Sendable, Equatable {
        /// The file descriptor number.
        public let fd: Int
        /// The path the fd link shows; evidence only, never matched on.
        public let path: String
        /// Block or character, from fstat.
        public let kind: OwnedNode.Kind
        /// Its device number, from fstat.
        public let number: DeviceNumber

        /// An open node as given.
        public init(fd: Int, path: String, kind: OwnedNode.Kind, number: DeviceNumber) {
            self.fd = fd
            self.path = path
            self.kind = kind
            self.number = number
        }
    }

    /// The process ID.
    public let pid: Int32
    /// Its command name (/proc/PID/comm).
    public let command: String
    /// The device nodes it has open.
    public var openNodes: [OpenNode]
    /// Paths of mapped sysfs PCI resource files, from /proc/PID/maps.
    public var mappedResources: [String]

    /// A process's use as given.
    public init(pid: Int32, command: String, openNodes: [OpenNode] = [], mappedResources: [String] = []) {
        self.pid = pid
        self.command = command
        self.openNodes = openNodes
        self.mappedResources = mappedResources
    }
}

/// A process that holds a device: taking the device from its driver pulls it from under the
/// process, or (vfio-pci, nvidia) the driver's remove waits until the process lets go.
public struct Holder: Sendable, Equatable, CustomStringConvertible {
    /// The process ID.
    public let pid: Int32
    /// Its command name.
    public let command: String
    /// What it holds: "/dev/nvme0n1 (block 259:0) open as fd 3", "resource0 mapped".
    public let what: String

    /// A holder as given.
    public init(pid: Int32, command: String, what: String) {
        self.pid = pid
        self.command = command
        self.what = what
    }

    /// "pid N (command) has what".
    public var description: String { "pid \(pid) (\(command)) has \(what)" }
}

/// Matches processes' open device nodes and mappings against what belongs to a device. Pure.
public enum HolderMatcher {
    /// Every holder of the device whose nodes are `nodes`, one per open fd or mapped file, in
    /// pid order. A node matches by kind and number only, never by name: a node made under
    /// another name (a container's /dev, a udev symlink) is the same device.
    public static func holders(of address: PCIAddress, nodes: [OwnedNode], among processes: [ProcessUse]) -> [Holder] {
        var byNumber: [OwnedNode.Kind: [DeviceNumber: OwnedNode]] = [:]
        for node in nodes { byNumber[node.kind, default: [:]][node.number] = node }
        var holders: [Holder] = []
        for process in processes.sorted(by: { $0.pid < $1.pid }) {
            for open in process.openNodes {
                guard let node = byNumber[open.kind]?[open.number] else { continue }
                let shown = open.path == node.name ? node.description : "\(open.path) = \(node.description)"
                holders.append(Holder(pid: process.pid, command: process.command, what: "\(shown) open as fd \(open.fd)"))
            }
            for path in Set(process.mappedResources).sorted() where isResource(path, of: address) {
                holders.append(Holder(pid: process.pid, command: process.command, what: "\(path) mapped"))
            }
        }
        return holders
    }

    /// Whether a mapped path is one of the device's sysfs resource files
    /// (`.../<address>/resource<N>` or `resource<N>_wc`): the parent directory of the file is
    /// named by the address, which is unique in sysfs.
    public static func isResource(_ path: String, of address: PCIAddress) -> Bool {
        let components = path.split(separator: "/")
        guard components.count >= 2, let file = components.last else { return false }
        let parent = components[components.count - 2]
        guard parent == address.description, file.hasPrefix("resource") else { return false }
        let rest = file.dropFirst("resource".count)
        let digits = rest.hasSuffix("_wc") ? rest.dropLast(3) : rest
        return !digits.isEmpty && digits.allSatisfy(\.isNumber)
    }

    /// The refusal line for a device with holders: who holds what.
    public static func evidence(_ address: PCIAddress, holders: [Holder]) -> String {
        "\(address) is in use: " + holders.map(\.description).joined(separator: "; ")
            + " (stop those processes, or close what they hold, first)"
    }
}

extension BindPlan {
    /// The plan with every device that would change driver and has holders refused (or, with
    /// `force`, going ahead with the holders named). Bind plans get this from `BindSafety`;
    /// this is for plans that are not judged there (unbind).
    public func refusingHeld(_ holders: [PCIAddress: [Holder]], force: Bool) -> BindPlan {
        var changed = false
        let judged = steps.map { step -> Step in
            guard step.action == .bind || step.action == .unbind,
                  let held = holders[step.address], !held.isEmpty else { return step }
            changed = true
            let evidence = HolderMatcher.evidence(step.address, holders: held)
            if force {
                return Step(address: step.address, fromDriver: step.fromDriver, toDriver: step.toDriver,
                            action: step.action, reasons: step.reasons + ["forced: " + evidence])
            }
            return Step(address: step.address, fromDriver: step.fromDriver, toDriver: step.fromDriver,
                        action: .refused, reasons: [evidence, "use --force to go ahead anyway"])
        }
        guard changed else { return self }
        return BindPlan(steps: judged, remainingBlockers: remainingBlockers, group: group)
    }
}
