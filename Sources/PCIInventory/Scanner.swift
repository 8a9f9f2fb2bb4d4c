#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization

/// Reads one inventory. Separate from `PCIInventory` so the read-only model stays free of I/O.
struct Scanner {
    let root: SysfsRoot
    let detail: PCIInventory.Detail
    let names: PCINameDatabase?
    let reader = SysfsReader()

    func run() throws(InventoryError) -> PCIInventory {
        let busPath = root.appending("bus/pci/devices")
        guard let entries = reader.listDirectory(busPath) else {
            throw .busDirectoryUnreadable(path: busPath)
        }
        var problems: [String] = []
        var addresses: [PCIAddress] = []
        addresses.reserveCapacity(entries.count)
        for entry in entries {
            if let address = PCIAddress(canonical: entry.utf8) ?? (try? PCIAddress(parsing: entry)) {
                addresses.append(address)
            } else {
                problems.append("\(busPath)/\(entry) is not a PCI address; ignored")
            }
        }
        addresses.sort()

        var devices = Self.readDevices(addresses, busPath: busPath, detail: detail)
        if let names { attachNames(&devices, names) }

        let (groups, groupProblems) = readGroups(devices: devices)
        problems += groupProblems
        let units = (reader.listDirectory(root.appending("class/iommu")) ?? []).sorted()
        let commandLine = root.isSystem ? reader.readString("/proc/cmdline") : nil
        let iommu = IOMMUStatus(units: units, groupCount: groups.count, kernelCommandLine: commandLine)
        return PCIInventory(root: root, devices: devices, groups: groups, iommu: iommu, problems: problems)
    }

    /// Reusable per-thread buffers: attributes, links and the resource file.
    struct ScanBuffers {
        var small = [UInt8](repeating: 0, count: 256)
        var link = [UInt8](repeating: 0, count: 4096)
        var large = [UInt8](repeating: 0, count: 8192)
    }

    /// Reads one device. Static and free of shared state, so devices can be read in parallel.
    /// `bus` is the opened bus/pci/devices directory, read once per worker for the links.
    static func readDevice(_ address: PCIAddress, bus: borrowing AttributeDirectory?, busPath: String,
                           detail: PCIInventory.Detail, buffers: inout ScanBuffers) -> PCIDevice {
        var device = PCIDevice(address: address)
        let name = address.description
        let directoryPath = busPath + "/" + name

        if let length = bus?.readLink(name, into: &buffers.link) {
            // The link's path from the root bus down: every PCI-address component above the
            // device itself is a bridge on the way.
            var bridges: [PCIAddress] = []
            let components = buffers.link[..<length].split(separator: UInt8(ascii: "/"))
            for component in components.dropLast() {
                if device.rootComplex == nil, let root = rootComplexName(component) {
                    device.rootComplex = root
                } else if let bridge = PCIAddress(canonical: component) {
                    bridges.append(bridge)
                } else if component.count > 12, component.contains(UInt8(ascii: ".")),
                          let bridge = try? PCIAddress(parsing: String(decoding: component, as: UTF8.self)) {
                    // Domains wider than four digits (Intel VMD) are not in the 12-byte form.
                    bridges.append(bridge)
                }
            }
            device.parentBridges = bridges.reversed()
        }

        guard let directory = AttributeDirectory(path: directoryPath) else {
            let reason = "cannot open \(directoryPath) (\(String(cString: strerror(errno))))"
            device.problems.append(reason)
            device.bindingUnknown = reason
            return device
        }
        func hex(_ attribute: String) -> UInt64? {
            guard let count = directory.read(attribute, into: &buffers.small) else { return nil }
            return AttributeBytes.hex(buffers.small, count: count)
        }
        device.vendorID = hex("vendor").flatMap(UInt16.init(exactly:))
        device.deviceID = hex("device").flatMap(UInt16.init(exactly:))
        device.classCode = hex("class").flatMap(UInt32.init(exactly:))
        device.revision = hex("revision").flatMap(UInt8.init(exactly:))
        device.subsystemVendorID = hex("subsystem_vendor").flatMap(UInt16.init(exactly:))
        device.subsystemDeviceID = hex("subsystem_device").flatMap(UInt16.init(exactly:))

        let identityComplete = device.vendorID != nil && device.deviceID != nil && device.classCode != nil
        var config: PCIConfigSpace?
        if detail == .full || !identityComplete {
            var bytes = [UInt8](repeating: 0, count: 4096)
            if let count = directory.read("config", into: &bytes) {
                bytes.removeSubrange(count...)
                config = PCIConfigSpace(bytes: bytes)
            }
        }
        if !identityComplete {
            fillIdentityFromConfig(&device, config)
        }

        if directory.exists("vfio-dev") {
            do throws(VFIODeviceFileName.Malformed) {
                device.vfioDeviceFile = try VFIODeviceFileName.read(deviceDirectory: directoryPath)
            } catch {
                device.problems.append(error.reason)
            }
        }

        // Topology for every listing: a fleet agent needs it without --full detail.
        if let count = directory.read("numa_node", into: &buffers.small),
           let node = AttributeBytes.decimal(buffers.small, count: count), node >= 0 {
            device.numaNode = node
        }
        if let count = directory.read("local_cpulist", into: &buffers.large) {
            let text = AttributeBytes.trimmedText(buffers.large, count: count)
            if let list = CPUList(parsing: text) {
                device.localCPUs = list.text
            } else {
                device.problems.append("local_cpulist \"\(text)\" is not a CPU list; local CPUs unknown")
            }
        }

        let driverLink = directory.readLink("driver", into: &buffers.link)
        if driverLink == nil, errno != ENOENT {
            // Present but not a readable link (a file, a FIFO): the binding is unknown.
            let reason = "\(directoryPath)/driver is not a readable link (\(String(cString: strerror(errno))))"
            device.problems.append(reason)
            device.bindingUnknown = reason
        }
        if let length = driverLink {
            device.driver = AttributeBytes.basename(buffers.link, count: length)
            if !directory.exists("driver") {
                let target = String(decoding: buffers.link[..<length], as: UTF8.self)
                device.problems.append("driver link points to a driver directory that does not exist (\(target)); treated as bound to \(device.driver ?? "?")")
            }
        }

        if let length = directory.readLink("iommu_group", into: &buffers.link) {
            let target = String(decoding: buffers.link[..<length], as: UTF8.self)
            if let group = AttributeBytes.trailingInteger(buffers.link, count: length) {
                device.iommuGroup = group
                if !directory.exists("iommu_group") {
                    device.problems.append("iommu_group link points to \(target), which does not exist")
                }
            } else {
                device.problems.append("iommu_group link points to \(target), which is not a group number")
            }
        }

        if let count = directory.read("resource", into: &buffers.large) {
            let parsed = parseResourceFile(&buffers.large, count: count)
            device.bars = parsed.bars
            device.rom = parsed.rom
            device.problems += parsed.problems
        } else {
            device.problems.append("no readable resource file: BARs unknown")
            device.resourceFileUnreadable = true
        }

        if detail == .full {
            readFullDetail(&device, directory: directoryPath, config: config)
        }
        return device
    }

    /// "pci0000:00" (also with a wider VMD domain, "pci10000:e0"): a root complex's sysfs name.
    static func rootComplexName(_ component: ArraySlice<UInt8>) -> String? {
        guard component.count >= 8, component.count <= 16, component.starts(with: Array("pci".utf8)) else { return nil }
        let rest = component.dropFirst(3)
        guard let colon = rest.firstIndex(of: UInt8(ascii: ":")), colon > rest.startIndex, rest.endIndex - colon == 3 else { return nil }
        let isHex: (UInt8) -> Bool = { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
        guard rest[..<colon].allSatisfy(isHex), rest[(colon + 1)...].allSatisfy(isHex) else { return nil }
        return String(decoding: component, as: UTF8.self)
    }

    private static func fillIdentityFromConfig(_ device: inout PCIDevice, _ config: PCIConfigSpace?) {
        var missing: [String] = []
        if device.vendorID == nil { missing.append("vendor") }
        if device.deviceID == nil { missing.append("device") }
        if device.classCode == nil { missing.append("class") }
        guard let config, config.hasHeader else {
            device.problems.append("missing or unreadable \(missing.joined(separator: ", ")) and no readable config space: identity unknown")
            return
        }
        device.vendorID = device.vendorID ?? config.vendorID
        device.deviceID = device.deviceID ?? config.deviceID
        device.classCode = device.classCode ?? config.classCode
        device.revision = device.revision ?? config.revision
        device.problems.append("missing or unreadable \(missing.joined(separator: ", ")) attribute; taken from config space")
    }

    private static func readFullDetail(_ device: inout PCIDevice, directory: String, config: PCIConfigSpace?) {
        let reader = SysfsReader()
        if let override = reader.readString(directory + "/driver_override"), override != "(null)", !override.isEmpty {
            device.driverOverride = override
        }
        if let methods = reader.readString(directory + "/reset_method") {
            device.resetMethods = methods.split(separator: " ").map(String.init)
        }
        if let bootVGA = reader.readInt(directory + "/boot_vga") {
            device.bootVGA = bootVGA != 0
        }
        if let config {
            if config.hasHeader {
                device.expressPortType = config.expressPortType
                device.accessControlServices = config.accessControlServices
                device.resizableBARs = Scanner.readResizableBARs(config, directory: directory)
            } else {
                device.problems.append("config space is \(config.bytes.count) bytes, shorter than the 64-byte header: capabilities unknown")
            }
        } else {
            device.problems.append("config space unreadable: capabilities (PCIe type, ACS) unknown")
        }
        if let physfn = reader.readLinkBasename(directory + "/physfn") {
            device.physicalFunction = try? PCIAddress(parsing: physfn)
        }
        // The PCIe TotalVFs field is 16 bits: anything but a decimal 0...65535 is not a count.
        let totalText = reader.readString(directory + "/sriov_totalvfs")
        if let totalText {
            let total = Int(totalText).flatMap { (0...0xffff).contains($0) ? $0 : nil }
            var virtualFunctions: [(Int, PCIAddress)] = []
            for entry in reader.listDirectory(directory) ?? [] where entry.hasPrefix("virtfn") {
                guard let number = Int(entry.dropFirst("virtfn".count)),
                      let target = reader.readLinkBasename(directory + "/" + entry),
                      let address = try? PCIAddress(parsing: target) else { continue }
                virtualFunctions.append((number, address))
            }
            virtualFunctions.sort { $0.0 < $1.0 }
            device.sriov = SRIOVPhysicalFunction(
                totalVFs: total,
                enabledVFs: reader.readInt(directory + "/sriov_numvfs").flatMap { (0...0xffff).contains($0) ? $0 : nil },
                virtualFunctions: virtualFunctions.map(\.1),
                totalVFsProblem: total == nil ? "sriov_totalvfs reads \"\(totalText.prefix(32))\", not a VF count (a decimal 0-65535)" : nil
            )
        }
    }

    /// Reads devices on every online CPU (up to 4): the work is syscalls on independent files.
    static func readDevices(_ addresses: [PCIAddress], busPath: String, detail: PCIInventory.Detail) -> [PCIDevice] {
        let workers = max(1, min(4, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), addresses.count / 64))
        if workers == 1 {
            var buffers = ScanBuffers()
            let bus = AttributeDirectory(path: busPath)
            return addresses.map { readDevice($0, bus: bus, busPath: busPath, detail: detail, buffers: &buffers) }
        }
        let chunkSize = (addresses.count + workers - 1) / workers
        let results = Mutex<[[PCIDevice]]>(Array(repeating: [], count: workers))
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            let chunk = addresses[min(addresses.count, worker * chunkSize)..<min(addresses.count, (worker + 1) * chunkSize)]
            var buffers = ScanBuffers()
            let bus = AttributeDirectory(path: busPath)
            let devices = chunk.map { readDevice($0, bus: bus, busPath: busPath, detail: detail, buffers: &buffers) }
            results.withLock { $0[worker] = devices }
        }
        return results.withLock { $0.flatMap { $0 } }
    }

    private func attachNames(_ devices: inout [PCIDevice], _ names: PCINameDatabase) {
        for index in devices.indices {
            let device = devices[index]
            var found = PCIDeviceNames()
            if let vendor = device.vendorID {
                found.vendor = names.vendorName(vendor)
                if let deviceID = device.deviceID {
                    found.device = names.deviceName(vendor: vendor, device: deviceID)
                    if detail == .full, let subVendor = device.subsystemVendorID, let subDevice = device.subsystemDeviceID {
                        found.subsystemVendor = names.vendorName(subVendor)
                        found.subsystem = names.subsystemName(vendor: vendor, device: deviceID,
                                                              subsystemVendor: subVendor, subsystemDevice: subDevice)
                    }
                }
            }
            if let classCode = device.classCode {
                found.className = names.className(classCode)
                if detail == .full { found.programmingInterface = names.programmingInterfaceName(classCode) }
            }
            devices[index].names = found
        }
    }

    private func readGroups(devices: [PCIDevice]) -> ([IOMMUGroup], [String]) {
        let groupsPath = root.appending("kernel/iommu_groups")
        guard let entries = reader.listDirectory(groupsPath) else { return ([], []) }
        var problems: [String] = []
        var byAddress: [PCIAddress: PCIDevice] = [:]
        for device in devices { byAddress[device.address] = device }
        var groups: [IOMMUGroup] = []
        for entry in entries {
            guard let id = Int(entry) else {
                problems.append("\(groupsPath)/\(entry) is not a group number; ignored")
                continue
            }
            let membersPath = groupsPath + "/" + entry + "/devices"
            guard let memberNames = reader.listDirectory(membersPath) else {
                problems.append("cannot read \(membersPath); group \(id) left out")
                continue
            }
            var members: [PCIDevice] = []
            var others: [(name: String, driver: String?)] = []
            for name in memberNames {
                if let address = try? PCIAddress(parsing: name) {
                    if let device = byAddress[address] {
                        members.append(device)
                    } else {
                        // Listed in the group but not on the bus: judge it from its own links.
                        var orphan = PCIDevice(address: address)
                        orphan.driver = reader.readLinkBasename(membersPath + "/" + name + "/driver")
                        orphan.classCode = reader.readHex(membersPath + "/" + name + "/class").flatMap(UInt32.init(exactly:))
                        members.append(orphan)
                        problems.append("group \(id) lists \(name), which is not under bus/pci/devices")
                    }
                } else {
                    others.append((name, reader.readLinkBasename(membersPath + "/" + name + "/driver")))
                }
            }
            members.sort { $0.address < $1.address }
            groups.append(IOMMUGroup(
                id: id,
                devices: members.map(\.address),
                otherMembers: others.map(\.name).sorted(),
                blockers: GroupViability.blockers(members: members, otherMembers: others)
            ))
        }
        groups.sort { $0.id < $1.id }
        return (groups, problems)
    }
}
