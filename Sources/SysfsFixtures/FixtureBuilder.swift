import Foundation
import TextFormat

/// Writes a `FixtureHost` as a sysfs tree laid out like the kernel's:
///
///     ROOT/devices/pci0000:00/0000:00:01.0/0000:01:00.0/{vendor,config,resource,driver,...}
///     ROOT/bus/pci/devices/<bdf> -> ../../../devices/pci0000:00/.../<bdf>
///     ROOT/bus/pci/drivers/<name>/{bind,unbind,new_id,remove_id,<bdf>}
///     ROOT/kernel/iommu_groups/<n>/{type,reserved_regions,devices/<bdf>}
///     ROOT/class/iommu/dmar0 -> ../../devices/virtual/iommu/dmar0
///
/// so that the same code (and `lspci -O sysfs.path=ROOT/bus/pci`) reads it like `/sys`.
public enum FixtureBuilder {
    /// Builds `host` under `rootPath`, which must be missing or an empty directory.
    public static func build(_ host: FixtureHost, at rootPath: String) throws {
        let topology = try FixtureTopology(host: host)
        try validate(host)
        try prepareEmptyDirectory(at: rootPath)
        let writer = TreeWriter(rootPath: rootPath)
        let build = TreeBuild(host: host, topology: topology, writer: writer)
        try build.writeSkeleton()
        try build.writeRootBuses()
        try build.writeDevices()
        try build.writeIOMMUGroups()
        try build.writeDrivers()
        try build.writeIOMMUUnit()
        try build.writeSlots()
        try build.applyFaults()
    }

    private static func prepareEmptyDirectory(at rootPath: String) throws {
        let fileManager = FileManager.default
        var isDirectory: ObjCBool = false
        if fileManager.fileExists(atPath: rootPath, isDirectory: &isDirectory) {
            let contents = (try? fileManager.contentsOfDirectory(atPath: rootPath)) ?? []
            guard isDirectory.boolValue, contents.isEmpty else {
                throw FixtureError.invalidDescription("\(rootPath) must be missing or an empty directory")
            }
        } else {
            try fileManager.createDirectory(atPath: rootPath, withIntermediateDirectories: true)
        }
    }

    private static func validate(_ host: FixtureHost) throws {
        guard host.cpuCount > 0, host.numaNodeCount > 0 else {
            throw FixtureError.invalidDescription("cpuCount and numaNodeCount must be positive")
        }
        let healthyGroups = Set(host.devices.filter { !$0.hasDanglingIOMMUGroupLink }.compactMap(\.iommuGroup))
        let boundDrivers = Set(host.registeredDrivers)
        for device in host.devices {
            for fault in device.faults {
                switch fault {
                case .danglingDriverLink(let name) where boundDrivers.contains(name):
                    throw FixtureError.invalidDescription("\(device.address): dangling driver \(name) is registered by another device")
                case .danglingIOMMUGroupLink(let group) where healthyGroups.contains(group):
                    throw FixtureError.invalidDescription("\(device.address): dangling group \(group) exists")
                default:
                    break
                }
            }
            // Real BARs are power-of-two sized and naturally aligned; readers may rely on both.
            for bar in device.bars + (device.sriov?.vfBARs ?? []) where !bar.isWellFormed {
                throw FixtureError.invalidDescription("\(device.address): BAR \(bar.index) needs index 0...5 and an aligned power-of-two size")
            }
            if let rom = device.rom, rom.size == 0 || rom.size & (rom.size - 1) != 0 || rom.start % rom.size != 0 {
                throw FixtureError.invalidDescription("\(device.address): ROM needs an aligned power-of-two size")
            }
        }
    }
}

extension FixtureBAR {
    var isWellFormed: Bool {
        (0...5).contains(index) && size != 0 && size & (size - 1) == 0 && start % size == 0
    }
}

/// Kernel drivers that are built in (no `module` link); every other driver is treated as a module.
private let builtInDrivers: Set<String> = ["pcieport"]

/// Module names where they differ from the driver name with dashes turned into underscores.
private let moduleNameByDriver: [String: String] = [
    "xhci_hcd": "xhci_pci",
    "skl_uncore": "intel_uncore",
    "i801_smbus": "i2c_i801",
    "intel-spi": "spi_intel_pci",
]

private func moduleName(forDriver driver: String) -> String? {
    guard !builtInDrivers.contains(driver) else { return nil }
    return moduleNameByDriver[driver] ?? driver.replacingDashes()
}

extension String {
    func replacingDashes() -> String { String(map { $0 == "-" ? "_" : $0 }) }
}

/// One build in progress: the host, where each device lives, and the writer.
private struct TreeBuild {
    let host: FixtureHost
    let topology: FixtureTopology
    let writer: TreeWriter

    static let busPCI = ["bus", "pci"]
    static let driversDirectory = ["bus", "pci", "drivers"]
    static let groupsDirectory = ["kernel", "iommu_groups"]

    var iommuUnitDirectory: [String]? {
        guard let iommu = host.iommu else { return nil }
        // AMD-Vi units hang below their PCI function (class 0806) when the host lists one.
        if iommu == .amd,
           let function = host.devices.first(where: { $0.classCode >> 8 == 0x0806 && $0.vendorID == 0x1022 }),
           let directory = topology.deviceDirectories[function.address] {
            return directory + ["iommu", iommu.unitName]
        }
        return ["devices", "virtual", "iommu", iommu.unitName]
    }

    func writeSkeleton() throws {
        for directory in [
            ["devices"], ["devices", "system"], ["devices", "virtual"],
            ["bus"], Self.busPCI, Self.busPCI + ["devices"], Self.driversDirectory, Self.busPCI + ["slots"],
            ["kernel"], Self.groupsDirectory,
            ["class"], ["class", "pci_bus"], ["class", "iommu"],
            ["module"],
        ] {
            try writer.makeDirectory(directory)
        }
        try writer.write(Self.busPCI + ["drivers_probe"], "", mode: 0o200)
        try writer.write(Self.busPCI + ["drivers_autoprobe"], "1\n", mode: 0o644)
        try writer.write(Self.busPCI + ["rescan"], "", mode: 0o200)
        try writer.write(Self.busPCI + ["resource_alignment"], "\n", mode: 0o644)
        try writer.write(Self.busPCI + ["uevent"], "", mode: 0o200)
    }

    func writeRootBuses() throws {
        for rootBus in topology.rootBusDirectories {
            try writer.makeDirectory(["devices", rootBus])
            try writer.write(["devices", rootBus, "uevent"], "", mode: 0o644)
            let busName = String(rootBus.dropFirst(3))
            try writePCIBus(named: busName, under: ["devices", rootBus])
        }
    }

    /// `<dir>/pci_bus/DDDD:BB` plus its `class/pci_bus` link, for root buses and bridge secondaries.
    private func writePCIBus(named busName: String, under directory: [String]) throws {
        let busDirectory = directory + ["pci_bus", busName]
        try writer.makeDirectory(directory + ["pci_bus"])
        try writer.makeDirectory(busDirectory)
        try writer.write(busDirectory + ["rescan"], "", mode: 0o200)
        try writer.relativeSymlink(["class", "pci_bus", busName], to: busDirectory)
    }

    func writeDevices() throws {
        // Parents before children so every directory's parent exists.
        let ordered = host.devices.sorted {
            let left = topology.deviceDirectories[$0.address]?.count ?? 0
            let right = topology.deviceDirectories[$1.address]?.count ?? 0
            return left != right ? left < right : $0.address < $1.address
        }
        for device in ordered {
            guard let directory = topology.deviceDirectories[device.address] else { continue }
            try writer.makeDirectory(directory)
            try writer.relativeSymlink(Self.busPCI + ["devices", device.address.description], to: directory)
            if let secondary = device.secondaryBus {
                try writePCIBus(named: device.address.domain.hexDigits(4) + ":" + secondary.hexDigits(2), under: directory)
            }
        }
        for device in ordered {
            guard let directory = topology.deviceDirectories[device.address] else { continue }
            try writeAttributes(of: device, in: directory)
        }
    }

    private func writeAttributes(of device: FixtureDevice, in directory: [String]) throws {
        let encoder = DeviceEncoder(device: device, topology: topology)
        let handle = try writer.openDirectory(directory)
        func attribute(_ name: String, _ text: String, mode: mode_t = 0o444) throws {
            try handle.write(name, text, mode: mode)
        }

        try attribute("vendor", device.vendorID.hex(digits: 4) + "\n")
        try attribute("device", device.deviceID.hex(digits: 4) + "\n")
        try attribute("subsystem_vendor", device.subsystemVendorID.hex(digits: 4) + "\n")
        try attribute("subsystem_device", device.subsystemDeviceID.hex(digits: 4) + "\n")
        try attribute("class", device.classCode.hex(digits: 6) + "\n")
        try attribute("revision", device.revision.hex(digits: 2) + "\n")
        try handle.write("config", bytes: encoder.configSpace(), mode: 0o644)
        try attribute("resource", encoder.resourceFile())
        for bar in device.resizableBARs where bar.resizeFile {
            try attribute("resource\(bar.index)_resize", bar.resizeFileText, mode: 0o644)
        }
        try attribute("driver_override", (device.driverOverride ?? "(null)") + "\n", mode: 0o644)
        try attribute("irq", String(device.irq) + "\n")
        try attribute("enable", encoder.bindsEnablingDriver || device.isBridge ? "1\n" : "0\n", mode: 0o644)
        try attribute("numa_node", String(device.numaNode) + "\n", mode: 0o644)
        try attribute("local_cpulist", localCPUList(numaNode: device.numaNode) + "\n")
        try attribute("local_cpus", localCPUMask(numaNode: device.numaNode) + "\n")
        try attribute("modalias", modalias(of: device) + "\n")
        try attribute("uevent", uevent(of: device), mode: 0o644)
        try attribute("power_state", "D0\n")
        try attribute("d3cold_allowed", "1\n", mode: 0o644)
        try attribute("msi_bus", "1\n", mode: 0o644)
        try attribute("broken_parity_status", "0\n", mode: 0o644)
        try attribute("dma_mask_bits", "64\n")
        try attribute("consistent_dma_mask_bits", "64\n")
        let ariEnabled = device.sriov != nil || topology.isVirtualFunction(device.address)
        try attribute("ari_enabled", ariEnabled ? "1\n" : "0\n")
        try attribute("remove", "", mode: 0o220)
        try attribute("rescan", "", mode: 0o200)
        try handle.relativeSymlink("subsystem", to: Self.busPCI)

        if !device.resetMethods.isEmpty {
            try attribute("reset_method", device.resetMethods.joined(separator: " ") + "\n", mode: 0o644)
            try attribute("reset", "", mode: 0o200)
        }
        if device.isVGA {
            try attribute("boot_vga", device.bootVGA ? "1\n" : "0\n")
        }
        if let pcie = device.pcie {
            try attribute("current_link_speed", (pcie.link?.currentSpeed.sysfsText ?? "Unknown") + "\n")
            try attribute("current_link_width", String(pcie.link?.currentWidth ?? 0) + "\n")
            try attribute("max_link_speed", (pcie.link?.maxSpeed.sysfsText ?? "Unknown") + "\n")
            try attribute("max_link_width", String(pcie.link?.maxWidth ?? 0) + "\n")
        }
        if let secondary = device.secondaryBus {
            try attribute("secondary_bus_number", String(secondary) + "\n")
            let subordinate = topology.bridgeWindows[device.address]?.highestBus ?? secondary
            try attribute("subordinate_bus_number", String(subordinate) + "\n")
        }

        if let driver = device.driver, !device.hasDanglingDriverLink {
            try handle.relativeSymlink("driver", to: Self.driversDirectory + [driver])
        }
        if let group = device.iommuGroup, host.iommu != nil, !device.hasDanglingIOMMUGroupLink {
            try handle.relativeSymlink("iommu_group", to: Self.groupsDirectory + [String(group)])
        }
        if device.iommuGroup != nil, let unit = iommuUnitDirectory {
            try handle.relativeSymlink("iommu", to: unit)
        }
        if let name = device.vfioDeviceFile {
            try writer.makeDirectory(directory + ["vfio-dev"])
            try writer.makeDirectory(directory + ["vfio-dev", name])
        }

        if let sriov = device.sriov {
            try attribute("sriov_totalvfs", String(sriov.totalVFs) + "\n")
            try attribute("sriov_numvfs", String(sriov.numVFs) + "\n", mode: 0o664)
            try attribute("sriov_offset", String(sriov.firstVFOffset) + "\n")
            try attribute("sriov_stride", String(sriov.vfStride) + "\n")
            try attribute("sriov_vf_device", sriov.vfDeviceID.hexDigits(1) + "\n")
            try attribute("sriov_drivers_autoprobe", sriov.driversAutoprobe ? "1\n" : "0\n", mode: 0o644)
            for (index, vfAddress) in sriov.virtualFunctionAddresses(physicalFunction: device.address).enumerated() {
                guard let vfDirectory = topology.deviceDirectories[vfAddress] else { continue }
                try handle.relativeSymlink("virtfn\(index)", to: vfDirectory)
            }
        }
        if let pfAddress = topology.physicalFunctionOfVirtualFunction[device.address],
           let pfDirectory = topology.deviceDirectories[pfAddress] {
            try handle.relativeSymlink("physfn", to: pfDirectory)
        }
    }

    func writeIOMMUGroups() throws {
        guard host.iommu != nil else { return }
        for (group, members) in host.iommuGroups.sorted(by: { $0.key < $1.key }) {
            let groupDirectory = Self.groupsDirectory + [String(group)]
            try writer.makeDirectory(groupDirectory)
            try writer.makeDirectory(groupDirectory + ["devices"])
            try writer.write(groupDirectory + ["type"], host.iommuDomainType.rawValue + "\n", mode: 0o644)
            // The x86 interrupt-remapping window every group reserves.
            try writer.write(groupDirectory + ["reserved_regions"], "0x00000000fee00000 0x00000000feefffff msi\n")
            for member in members {
                guard let directory = topology.deviceDirectories[member] else { continue }
                try writer.relativeSymlink(groupDirectory + ["devices", member.description], to: directory)
            }
        }
    }

    func writeDrivers() throws {
        var boundDevices: [String: [FixtureAddress]] = [:]
        for device in host.devices where !device.hasDanglingDriverLink {
            if let driver = device.driver { boundDevices[driver, default: []].append(device.address) }
        }
        for driver in host.registeredDrivers {
            let driverDirectory = Self.driversDirectory + [driver]
            try writer.makeDirectory(driverDirectory)
            for control in ["bind", "unbind", "new_id", "remove_id", "uevent"] {
                try writer.write(driverDirectory + [control], "", mode: 0o200)
            }
            if let module = moduleName(forDriver: driver) {
                let moduleDirectory = ["module", module]
                try writer.makeDirectory(moduleDirectory)
                try writer.makeDirectory(moduleDirectory + ["drivers"])
                try writer.relativeSymlink(driverDirectory + ["module"], to: moduleDirectory)
                try writer.relativeSymlink(moduleDirectory + ["drivers", "pci:" + driver], to: driverDirectory)
            }
            for address in (boundDevices[driver] ?? []).sorted() {
                guard let directory = topology.deviceDirectories[address] else { continue }
                try writer.relativeSymlink(driverDirectory + [address.description], to: directory)
            }
        }
    }

    func writeIOMMUUnit() throws {
        guard let iommu = host.iommu, let unitDirectory = iommuUnitDirectory else { return }
        try writer.makeDirectories(unitDirectory)
        try writer.makeDirectory(unitDirectory + ["devices"])
        switch iommu {
        case .intel:
            let details = unitDirectory + ["intel-iommu"]
            try writer.makeDirectory(details)
            try writer.write(details + ["version"], "1:0\n")
            try writer.write(details + ["cap"], "d2008c40660462\n")
            try writer.write(details + ["ecap"], "f050da\n")
            try writer.write(details + ["address"], "fed91000\n")
        case .amd:
            let details = unitDirectory + ["amd-iommu"]
            try writer.makeDirectory(details)
            try writer.write(details + ["cap"], "190b640f\n")
            try writer.write(details + ["features"], "25bf732fa2295afe\n")
        }
        try writer.relativeSymlink(["class", "iommu", iommu.unitName], to: unitDirectory)
        for device in host.devices.sorted(by: { $0.address < $1.address }) where device.iommuGroup != nil {
            guard let directory = topology.deviceDirectories[device.address] else { continue }
            try writer.relativeSymlink(unitDirectory + ["devices", device.address.description], to: directory)
        }
    }

    /// `bus/pci/slots/<n>/address` for ports that implement a numbered slot.
    func writeSlots() throws {
        for device in host.devices {
            guard let slot = device.pcie?.slotNumber, let secondary = device.secondaryBus,
                  device.pcie?.portType.isDownstreamFacing == true else { continue }
            let slotDirectory = Self.busPCI + ["slots", String(slot)]
            try writer.makeDirectory(slotDirectory)
            try writer.write(slotDirectory + ["address"], device.address.domain.hexDigits(4) + ":" + secondary.hexDigits(2) + ":00\n")
        }
    }

    func applyFaults() throws {
        for device in host.devices where !device.faults.isEmpty {
            guard let directory = topology.deviceDirectories[device.address] else { continue }
            for fault in device.faults {
                switch fault {
                case .missingAttribute(let name):
                    try writer.removeFile(directory + [name])
                case .replaceAttribute(let name, let contents):
                    try writer.removeFile(directory + [name])
                    try writer.write(directory + [name], contents)
                case .truncatedConfig(let byteCount):
                    try writer.truncateFile(directory + ["config"], to: byteCount)
                case .danglingDriverLink(let driverName):
                    try writer.removeFile(directory + ["driver"])
                    try writer.relativeSymlink(directory + ["driver"], to: Self.driversDirectory + [driverName])
                case .danglingIOMMUGroupLink(let group):
                    try writer.removeFile(directory + ["iommu_group"])
                    try writer.relativeSymlink(directory + ["iommu_group"], to: Self.groupsDirectory + [String(group)])
                }
            }
        }
    }

    // MARK: formatting

    private func cpuRange(numaNode: Int) -> ClosedRange<Int> {
        guard numaNode >= 0, numaNode < host.numaNodeCount else { return 0...(host.cpuCount - 1) }
        let perNode = max(host.cpuCount / host.numaNodeCount, 1)
        let first = min(numaNode * perNode, host.cpuCount - 1)
        return first...min(first + perNode - 1, host.cpuCount - 1)
    }

    private func localCPUList(numaNode: Int) -> String {
        let range = cpuRange(numaNode: numaNode)
        return range.count == 1 ? String(range.lowerBound) : "\(range.lowerBound)-\(range.upperBound)"
    }

    /// The kernel's `%*pb` bitmap: hex, 32-bit chunks separated by commas, as wide as the CPU count.
    private func localCPUMask(numaNode: Int) -> String {
        let range = cpuRange(numaNode: numaNode)
        let chunkCount = (host.cpuCount + 31) / 32
        var chunks: [String] = []
        for chunk in (0..<chunkCount).reversed() {
            var word: UInt32 = 0
            for bit in 0..<32 where range.contains(chunk * 32 + bit) { word |= 1 << UInt32(bit) }
            let bitsInChunk = min(32, host.cpuCount - chunk * 32)
            chunks.append(word.hexDigits((bitsInChunk + 3) / 4))
        }
        return chunks.joined(separator: ",")
    }

    private func modalias(of device: FixtureDevice) -> String {
        "pci:v" + upperHex(device.vendorID, width: 8) + "d" + upperHex(device.deviceID, width: 8)
            + "sv" + upperHex(device.subsystemVendorID, width: 8) + "sd" + upperHex(device.subsystemDeviceID, width: 8)
            + "bc" + upperHex(device.classCode >> 16, width: 2) + "sc" + upperHex((device.classCode >> 8) & 0xff, width: 2)
            + "i" + upperHex(device.classCode & 0xff, width: 2)
    }

    private func uevent(of device: FixtureDevice) -> String {
        var lines: [String] = []
        if let driver = device.driver, !device.hasDanglingDriverLink { lines.append("DRIVER=" + driver) }
        lines.append("PCI_CLASS=" + String(device.classCode, radix: 16, uppercase: true))
        lines.append("PCI_ID=" + upperHex(device.vendorID, width: 4) + ":" + upperHex(device.deviceID, width: 4))
        lines.append("PCI_SUBSYS_ID=" + upperHex(device.subsystemVendorID, width: 4) + ":" + upperHex(device.subsystemDeviceID, width: 4))
        lines.append("PCI_SLOT_NAME=" + device.address.description)
        lines.append("MODALIAS=" + modalias(of: device))
        return lines.joined(separator: "\n") + "\n"
    }
}
