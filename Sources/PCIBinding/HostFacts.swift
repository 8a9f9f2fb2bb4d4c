#if canImport(Glibc)
import Glibc
#endif
import PCIInventory
import SystemCalls

/// What on the host depends on PCI devices: the evidence the safety checks judge. Gathered once
/// per run by `HostFactsReader`; plain data, so the judge that reads it is pure.
public struct HostFacts: Sendable {
    /// Mounted filesystems on PCI-attached block devices.
    public var mounts: [MountFact] = []
    /// Why the mount table (/proc/self/mountinfo) could not be read; nil when it was. Without it
    /// no device can be cleared of a mounted filesystem, the root disk's included.
    public var mountsUnreadable: String?
    /// Active swap on PCI-attached block devices.
    public var swaps: [SwapFact] = []
    /// Network interfaces and the devices behind them.
    public var interfaces: [NetworkInterfaceFact] = []
    /// Framebuffers and the devices behind them.
    public var framebuffers: [FramebufferFact] = []
    /// Whether a framebuffer console (fbcon) is bound to a virtual terminal.
    public var framebufferConsoleActive = false
    /// Processes holding each device (open nodes, mapped resources); devices without are absent.
    public var holders: [PCIAddress: [Holder]] = [:]

    /// No facts.
    public init() {}
}

/// A mounted filesystem and the PCI devices its block device sits on (through partitions,
/// device-mapper, md and other stacked devices), the bridges on the way included: taking any of
/// them from its driver takes the disk too.
public struct MountFact: Sendable, Equatable {
    /// Where it is mounted.
    public var mountPoint: String
    /// The mount source as /proc/mounts says it.
    public var source: String
    /// The block device it resolves to.
    public var blockDevice: String
    /// The PCI devices under that block device, bridges included.
    public var pciDevices: [PCIAddress]
    /// A mount as given.
    public init(mountPoint: String, source: String, blockDevice: String, pciDevices: [PCIAddress]) {
        self.mountPoint = mountPoint; self.source = source; self.blockDevice = blockDevice; self.pciDevices = pciDevices
    }
}

/// An active swap area and the PCI devices its block device sits on.
public struct SwapFact: Sendable, Equatable {
    /// The swap file or partition, as /proc/swaps says it.
    public var path: String
    /// The block device it resolves to.
    public var blockDevice: String
    /// The PCI devices under that block device, bridges included.
    public var pciDevices: [PCIAddress]
    /// A swap area as given.
    public init(path: String, blockDevice: String, pciDevices: [PCIAddress]) {
        self.path = path; self.blockDevice = blockDevice; self.pciDevices = pciDevices
    }
}

/// A network interface and the PCI device behind it.
public struct NetworkInterfaceFact: Sendable, Equatable {
    /// The interface name.
    public var name: String
    /// The PCI device behind it; nil for a virtual interface.
    public var pciDevice: PCIAddress?
    /// Whether the interface is up.
    public var isUp: Bool
    /// Its IP addresses.
    public var addresses: [String]
    /// Routes through this interface, as "destination/prefix" (or "default").
    public var routes: [String]
    /// An interface as given.
    public init(name: String, pciDevice: PCIAddress?, isUp: Bool, addresses: [String], routes: [String]) {
        self.name = name; self.pciDevice = pciDevice; self.isUp = isUp; self.addresses = addresses; self.routes = routes
    }
}

/// A framebuffer and the PCI device behind it.
public struct FramebufferFact: Sendable, Equatable {
    /// The framebuffer's name (fb0).
    public var name: String
    /// The framebuffer driver's name.
    public var driverName: String
    /// The PCI device behind it; nil when it has none.
    public var pciDevice: PCIAddress?
    /// A framebuffer as given.
    public init(name: String, driverName: String, pciDevice: PCIAddress?) {
        self.name = name; self.driverName = driverName; self.pciDevice = pciDevice
    }
}

/// Reads host facts from sysfs (under the sysfs root) and procfs (under the proc root).
/// Interface addresses come from getifaddrs(3) only when the roots are the running system's,
/// since a copied tree has no sockets; /proc/net/if_inet6 and the route tables are read from the
/// proc root either way.
public struct HostFactsReader {
    /// The sysfs root.
    public let sysfs: SysfsRoot
    /// The proc root.
    public let procRoot: String
    let reader = SysfsReader()

    /// A reader of these roots.
    public init(sysfs: SysfsRoot, procRoot: String = "/proc") {
        self.sysfs = sysfs
        self.procRoot = procRoot
    }

    var isLiveSystem: Bool { sysfs.isSystem && (procRoot == "/proc" || SysfsRoot.isSameDirectory(procRoot, "/proc")) }

    /// Reads every fact, the holders of every device included; what cannot be read is left out, never fatal.
    public func read() -> HostFacts {
        var facts = HostFacts()
        switch readMounts() {
        case .success(let mounts): facts.mounts = mounts
        case .failure(let error): facts.mountsUnreadable = error.description
        }
        facts.swaps = readSwaps()
        facts.interfaces = readInterfaces()
        (facts.framebuffers, facts.framebufferConsoleActive) = readFramebuffers()
        facts.holders = HolderReader(sysfs: sysfs, procRoot: procRoot, devRoot: isLiveSystem ? "/dev" : nil).holdersOfEveryDevice()
        return facts
    }

    // MARK: Block devices

    /// PCI addresses in a sysfs device path: every component that parses as one.
    func pciAddresses(inPath path: String) -> [PCIAddress] {
        path.split(separator: "/").compactMap { (component: Substring) -> PCIAddress? in
            guard component.count >= 12, component.contains(".") else { return nil }
            return try? PCIAddress(parsing: String(component))
        }
    }

    /// The PCI devices under a block device, following slaves/ of stacked devices (dm, md).
    func pciDevices(ofBlockDevice name: String, depth: Int = 0) -> [PCIAddress] {
        guard depth < 8 else { return [] }
        let classPath = sysfs.appending("class/block/\(name)")
        guard let target = reader.readLink(classPath) else { return [] }
        var addresses = pciAddresses(inPath: target)
        // A partition's slaves are its parent's; stacked devices list theirs.
        let slaveDirectory = classPath + "/slaves"
        for slave in reader.listDirectory(slaveDirectory) ?? [String]() {
            addresses += pciDevices(ofBlockDevice: slave, depth: depth + 1)
        }
        return Array(Set(addresses)).sorted()
    }

    /// The block device name for a "major:minor" pair, from /sys/dev/block.
    func blockDeviceName(majorMinor: String) -> String? {
        reader.readLinkBasename(sysfs.appending("dev/block/\(majorMinor)"))
    }

    /// The mounts on PCI devices; fails when the mount table cannot be read whole (missing,
    /// unreadable, not a regular file, or larger than any real one), never read in part.
    func readMounts() -> Result<[MountFact], SafeFileError> {
        let text: String
        do { text = String(decoding: try SafeFile.read(procRoot + "/self/mountinfo", limit: 8 << 20, followFinalLink: false), as: UTF8.self) } catch {
            return .failure(error)
        }
        var mounts: [MountFact] = []
        for line in text.split(separator: "\n") {
            // mountinfo: id parent major:minor root mountpoint options ... - fstype source superoptions
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 5, let separator = fields.firstIndex(of: "-"), separator + 2 < fields.count else { continue }
            let majorMinor = String(fields[2])
            guard !majorMinor.hasPrefix("0:"), let name = blockDeviceName(majorMinor: majorMinor) else { continue }
            let devices = pciDevices(ofBlockDevice: name)
            guard !devices.isEmpty else { continue }
            mounts.append(MountFact(mountPoint: unescapeMountField(fields[4]),
                                    source: unescapeMountField(fields[separator + 2]),
                                    blockDevice: name, pciDevices: devices))
        }
        return .success(mounts)
    }

    func readSwaps() -> [SwapFact] {
        guard let text = reader.readBytes(procRoot + "/swaps", limit: 1 << 16)
            .map({ String(decoding: $0, as: UTF8.self) }) else { return [] }
        var swaps: [SwapFact] = []
        for line in text.split(separator: "\n").dropFirst() {
            guard let path = line.split(separator: " ").first.map(String.init), path.hasPrefix("/dev/") else { continue }
            let name = String(path.dropFirst("/dev/".count))
            let devices = pciDevices(ofBlockDevice: name)
            if !devices.isEmpty { swaps.append(SwapFact(path: path, blockDevice: name, pciDevices: devices)) }
        }
        return swaps
    }

    // MARK: Network

    func readInterfaces() -> [NetworkInterfaceFact] {
        let routes = readRoutes()
        let addresses = isLiveSystem ? liveAddresses() : [:]
        let inet6 = readInet6Addresses()
        var interfaces: [NetworkInterfaceFact] = []
        for name in (reader.listDirectory(sysfs.appending("class/net")) ?? []).sorted() {
            let base = sysfs.appending("class/net/\(name)")
            let device = reader.readLink(base + "/device").flatMap { pciAddresses(inPath: $0).last }
            // IFF_UP is bit 0 of the flags attribute; operstate alone lags behind.
            let flags = reader.readHex(base + "/flags") ?? 0
            let operstate = reader.readString(base + "/operstate")
            let isUp = flags & 0x1 != 0 || operstate == "up"
            var interfaceAddresses = addresses[name] ?? []
            interfaceAddresses += (inet6[name] ?? []).filter { !interfaceAddresses.contains($0) }
            interfaces.append(NetworkInterfaceFact(name: name, pciDevice: device, isUp: isUp,
                                                   addresses: interfaceAddresses, routes: routes[name] ?? []))
        }
        return interfaces
    }

    /// IPv4 routes from /proc/net/route and IPv6 routes from /proc/net/ipv6_route, by interface.
    func readRoutes() -> [String: [String]] {
        var routes: [String: [String]] = [:]
        if let text = reader.readBytes(procRoot + "/net/route", limit: 1 << 20).map({ String(decoding: $0, as: UTF8.self) }) {
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
                guard fields.count >= 8, let destination = UInt32(fields[1], radix: 16),
                      let mask = UInt32(fields[7], radix: 16) else { continue }
                let prefix = mask.nonzeroBitCount
                let text = prefix == 0 ? "default" : "\(ipv4(destination))/\(prefix)"
                routes[String(fields[0]), default: []].append(text)
            }
        }
        if let text = reader.readBytes(procRoot + "/net/ipv6_route", limit: 1 << 20).map({ String(decoding: $0, as: UTF8.self) }) {
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count >= 10 else { continue }
                let interface = String(fields[9])
                // Local and multicast table entries (fe80::/64, ff00::/8 on every up interface)
                // exist without any configuration; only routes a user set up count.
                let destination = String(fields[0]), prefix = Int(fields[1], radix: 16) ?? 0
                if interface == "lo" || destination.hasPrefix("fe80") || destination.hasPrefix("ff") { continue }
                routes[interface, default: []].append(prefix == 0 ? "default (IPv6)" : "\(ipv6(destination))/\(prefix)")
            }
        }
        return routes
    }

    /// Global IPv6 addresses from /proc/net/if_inet6 (link-local ones appear on every up link).
    func readInet6Addresses() -> [String: [String]] {
        guard let text = reader.readBytes(procRoot + "/net/if_inet6", limit: 1 << 20)
            .map({ String(decoding: $0, as: UTF8.self) }) else { return [:] }
        var result: [String: [String]] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6 else { continue }
            let address = String(fields[0])
            if address.hasPrefix("fe80") { continue }
            result[String(fields[5]), default: []].append(ipv6(address) + "/" + String(Int(fields[2], radix: 16) ?? 0))
        }
        return result
    }

    /// IPv4 addresses of each interface from getifaddrs(3).
    func liveAddresses() -> [String: [String]] {
        var result: [String: [String]] = [:]
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return [:] }
        defer { freeifaddrs(list) }
        var cursor = list
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let name = entry.pointee.ifa_name, let address = entry.pointee.ifa_addr,
                  address.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            // Contract: an AF_INET sockaddr from getifaddrs is a sockaddr_in.
            let ipv4Address = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
            result[String(cString: name), default: []].append(self.ipv4(ipv4Address))
        }
        return result
    }

    /// /proc/net/route prints addresses as host-order hex of the network-order value.
    func ipv4(_ value: UInt32) -> String {
        let bytes = [value & 0xff, (value >> 8) & 0xff, (value >> 16) & 0xff, value >> 24]
        return bytes.map(String.init).joined(separator: ".")
    }

    func ipv6(_ hex: String) -> String {
        guard hex.count == 32 else { return hex }
        var groups: [String] = []
        var index = hex.startIndex
        for _ in 0..<8 {
            let end = hex.index(index, offsetBy: 4)
            let group = String(hex[index..<end]).drop { $0 == "0" }
            groups.append(group.isEmpty ? "0" : String(group))
            index = end
        }
        return groups.joined(separator: ":")
    }

    // MARK: Display

    func readFramebuffers() -> ([FramebufferFact], Bool) {
        var framebuffers: [FramebufferFact] = []
        for name in (reader.listDirectory(sysfs.appending("class/graphics")) ?? []).sorted() where name.hasPrefix("fb") && name != "fbcon" {
            let base = sysfs.appending("class/graphics/\(name)")
            let device = reader.readLink(base + "/device").flatMap { pciAddresses(inPath: $0).last }
            framebuffers.append(FramebufferFact(name: name, driverName: reader.readString(base + "/name") ?? "", pciDevice: device))
        }
        var consoleActive = false
        for name in reader.listDirectory(sysfs.appending("class/vtconsole")) ?? [] {
            let base = sysfs.appending("class/vtconsole/\(name)")
            if reader.readString(base + "/name")?.contains("frame buffer") == true, reader.readInt(base + "/bind") == 1 {
                consoleActive = true
            }
        }
        return (framebuffers, consoleActive)
    }
}

/// mountinfo escapes spaces and a few other bytes as \ooo octal.
func unescapeMountField(_ field: Substring) -> String {
    guard field.contains("\\") else { return String(field) }
    var bytes: [UInt8] = []
    var iterator = Array(field.utf8)[...]
    while let byte = iterator.popFirst() {
        if byte == UInt8(ascii: "\\"), iterator.count >= 3,
           let value = UInt8(String(decoding: iterator.prefix(3), as: UTF8.self), radix: 8) {
            bytes.append(value)
            iterator = iterator.dropFirst(3)
        } else {
            bytes.append(byte)
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}
