import Foundation
import SysfsFixtures
import Testing

/// Checks the fixture builder itself: layout, links, file formats, and that lspci reads the trees
/// exactly like a real /sys (which is what makes them trustworthy for the inventory tests).
@Suite("Fixture builder")
struct FixtureBuilderTests {
    /// Healthy named fixtures, with a cut-down large host so the debug test run stays quick.
    static let healthyFixtures: [(name: String, host: FixtureHost)] = [
        ("gpuWorkstation", .gpuWorkstation),
        ("noIOMMU", .noIOMMU),
        ("largeSRIOVHost(120)", .largeSRIOVHost(deviceCount: 120)),
    ]

    static var healthyFixtureNames: [String] { healthyFixtures.map(\.name) }

    static func healthyFixture(named name: String) throws -> FixtureHost {
        try #require(healthyFixtures.first { $0.name == name }?.host)
    }

    // MARK: lspci reads the fixtures like /sys

    @Test("lspci -D -nn lists exactly the fixture's devices with IDs, classes and pci.ids names", arguments: healthyFixtureNames)
    func lspciListsFixtureDevices(fixtureName: String) throws {
        let host = try Self.healthyFixture(named: fixtureName)
        try withTemporarySysfsTree(host) { tree throws in
            guard let result = try FixtureTestSupport.lspci(tree, ["-D", "-nn"]) else { return }
            #expect(result.exitCode == 0, "lspci failed: \(result.standardError)")
            let lines = FixtureTestSupport.deviceLines(result.standardOutput)
            #expect(Set(lines.keys) == Set(host.devices.map(\.address)))
            for device in host.devices {
                let line = try #require(lines[device.address])
                let ids = "[" + hexDigits(device.vendorID, 4) + ":" + hexDigits(device.deviceID, 4) + "]"
                let classID = "[" + hexDigits(device.classCode >> 8, 4) + "]"
                #expect(line.contains(ids), "\(line) should contain \(ids)")
                #expect(line.contains(classID + ":"), "\(line) should contain class \(classID)")
                // lspci falls back to "Device [vvvv:dddd]" / "Class [cccc]" when pci.ids lacks a name.
                #expect(!line.contains(" Device " + ids) && !line.contains("Class " + classID), "no pci.ids name: \(line)")
                if device.revision != 0 {
                    #expect(line.hasSuffix("(rev \(hexDigits(device.revision, 2)))"), "\(line)")
                }
            }
        }
    }

    @Test("lspci -k shows the bound drivers, and nothing for unbound devices", arguments: healthyFixtureNames)
    func lspciShowsDrivers(fixtureName: String) throws {
        let host = try Self.healthyFixture(named: fixtureName)
        try withTemporarySysfsTree(host) { tree throws in
            guard let result = try FixtureTestSupport.lspci(tree, ["-D", "-nn", "-k"]) else { return }
            #expect(result.exitCode == 0, "lspci failed: \(result.standardError)")
            let drivers = FixtureTestSupport.kernelDrivers(result.standardOutput)
            for device in host.devices {
                #expect(drivers[device.address] == device.driver, "\(device.address)")
            }
        }
    }

    @Test("lspci -t draws the bridge hierarchy of the GPU workstation")
    func lspciTreeFollowsBridges() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree throws in
            guard let result = try FixtureTestSupport.lspci(tree, ["-t"]) else { return }
            #expect(result.exitCode == 0)
            #expect(result.standardOutput.contains("+-1c.4-[04-07]----00.0-[05-07]--+-08.0-[06]----00.0"))
            #expect(result.standardOutput.contains("+-01.0-[01]--+-00.0"))
            #expect(result.standardOutput.contains("+-1d.0-[08]--+-00.0"))
        }
    }

    @Test("lspci -vvv decodes ACS, SR-IOV and the GPU's BARs from config space")
    func lspciDecodesCapabilities() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree throws in
            guard let rootPort = try FixtureTestSupport.lspci(tree, ["-vvv", "-s", "00:1c.4"]),
                  let downstreamPort = try FixtureTestSupport.lspci(tree, ["-vvv", "-s", "05:10.0"]),
                  let physicalFunction = try FixtureTestSupport.lspci(tree, ["-vvv", "-s", "08:00.0"]),
                  let gpu = try FixtureTestSupport.lspci(tree, ["-vvv", "-s", "01:00.0"])
            else { return }
            #expect(rootPort.standardOutput.contains("Express (v2) Root Port (Slot+)"))
            #expect(rootPort.standardOutput.contains("ACSCtl:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+"))
            #expect(rootPort.standardOutput.contains("Bus: primary=00, secondary=04, subordinate=07"))
            #expect(downstreamPort.standardOutput.contains("ACSCtl:\tSrcValid- TransBlk- ReqRedir- CmpltRedir- UpstreamFwd-"))
            #expect(physicalFunction.standardOutput.contains("Initial VFs: 64, Total VFs: 64, Number of VFs: 4"))
            #expect(physicalFunction.standardOutput.contains("VF offset: 16, stride: 1, Device ID: 154c"))
            #expect(gpu.standardOutput.contains("Region 1: Memory at c0000000 (64-bit, prefetchable) [size=256M]"))
            #expect(gpu.standardOutput.contains("Region 5: I/O ports at e000 [size=128]"))
            #expect(gpu.standardOutput.contains("Expansion ROM at df000000 [disabled] [size=512K]"))
            #expect(gpu.standardOutput.contains("IOMMU group: 8"))
            #expect(!gpu.standardOutput.contains("[virtual]"), "config BARs must match resource")
        }
    }

    // MARK: layout and links

    @Test("every symlink in a healthy fixture resolves", arguments: healthyFixtureNames)
    func symlinksResolve(fixtureName: String) throws {
        let host = try Self.healthyFixture(named: fixtureName)
        try withTemporarySysfsTree(host) { tree throws in
            #expect(FixtureTestSupport.danglingSymlinks(under: tree.rootPath) == [])
        }
    }

    @Test("bus/pci/devices links land in the hierarchical device directories")
    func deviceDirectoriesFollowTheBridgeChain() throws {
        let host = FixtureHost.gpuWorkstation
        try withTemporarySysfsTree(host) { tree throws in
            let fileManager = FileManager.default
            let link = tree.pciBusPath + "/devices/0000:06:00.0"
            #expect(try fileManager.destinationOfSymbolicLink(atPath: link)
                == "../../../devices/pci0000:00/0000:00:1c.4/0000:04:00.0/0000:05:08.0/0000:06:00.0")
            for device in host.devices {
                let resolved = URL(fileURLWithPath: tree.pciBusPath + "/devices/" + device.address.description)
                    .resolvingSymlinksInPath()
                let parentName = resolved.deletingLastPathComponent().lastPathComponent
                let expectedParent = host.parent(of: device.address)?.description ?? "pci" + device.address.busName
                #expect(parentName == expectedParent, "\(device.address)")
            }
            // VFs live next to their PF, and link both ways.
            let physicalFunction = tree.pciBusPath + "/devices/0000:08:00.0"
            #expect(try fileManager.destinationOfSymbolicLink(atPath: physicalFunction + "/virtfn2") == "../0000:08:02.2")
            #expect(try fileManager.destinationOfSymbolicLink(atPath: tree.pciBusPath + "/devices/0000:08:02.2/physfn") == "../0000:08:00.0")
            #expect(try FixtureTestSupport.readText(physicalFunction + "/sriov_numvfs") == "4\n")
            #expect(try FixtureTestSupport.readText(physicalFunction + "/sriov_totalvfs") == "64\n")
        }
    }

    @Test("driver, iommu_group and driver directory links use the kernel's relative spelling")
    func relativeLinkSpelling() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree throws in
            let fileManager = FileManager.default
            let gpu = tree.rootPath + "/devices/pci0000:00/0000:00:01.0/0000:01:00.0"
            #expect(try fileManager.destinationOfSymbolicLink(atPath: gpu + "/driver") == "../../../../bus/pci/drivers/vfio-pci")
            #expect(try fileManager.destinationOfSymbolicLink(atPath: gpu + "/iommu_group") == "../../../../kernel/iommu_groups/8")
            let hostBridge = tree.rootPath + "/devices/pci0000:00/0000:00:00.0"
            #expect(try fileManager.destinationOfSymbolicLink(atPath: hostBridge + "/driver") == "../../../bus/pci/drivers/skl_uncore")
            #expect(try fileManager.destinationOfSymbolicLink(atPath: tree.pciBusPath + "/drivers/vfio-pci/0000:01:00.0")
                == "../../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0")
            #expect(try fileManager.destinationOfSymbolicLink(atPath: tree.rootPath + "/kernel/iommu_groups/8/devices/0000:01:00.1")
                == "../../../../devices/pci0000:00/0000:00:01.0/0000:01:00.1")
            #expect(try fileManager.destinationOfSymbolicLink(atPath: tree.rootPath + "/class/iommu/dmar0") == "../../devices/virtual/iommu/dmar0")
            for control in ["bind", "unbind", "new_id", "remove_id"] {
                #expect(fileManager.fileExists(atPath: tree.pciBusPath + "/drivers/nvme/" + control))
            }
            #expect(fileManager.fileExists(atPath: tree.pciBusPath + "/drivers_probe"))
        }
    }

    @Test("kernel/iommu_groups mirrors the description, with type files", arguments: healthyFixtureNames)
    func iommuGroupsMatchDescription(fixtureName: String) throws {
        let host = try Self.healthyFixture(named: fixtureName)
        try withTemporarySysfsTree(host) { tree throws in
            let groupsPath = tree.rootPath + "/kernel/iommu_groups"
            let fileManager = FileManager.default
            var found: [Int: [FixtureAddress]] = [:]
            for name in try fileManager.contentsOfDirectory(atPath: groupsPath) {
                let group = try #require(Int(name))
                found[group] = try fileManager.contentsOfDirectory(atPath: groupsPath + "/\(name)/devices")
                    .compactMap(FixtureAddress.init).sorted()
                #expect(try FixtureTestSupport.readText(groupsPath + "/\(name)/type") == host.iommuDomainType.rawValue + "\n")
            }
            #expect(found == host.iommuGroups)
        }
    }

    @Test("the GPU workstation's groups: GPU pair, shared switch group, one group per VF")
    func gpuWorkstationGroups() {
        let groups = FixtureHost.gpuWorkstation.iommuGroups
        #expect(groups[GPUWorkstation.Group.gpu] == [GPUWorkstation.gpu, GPUWorkstation.gpuAudio])
        #expect(groups[GPUWorkstation.Group.behindSwitch] == [
            GPUWorkstation.switchDownstreamPortA, GPUWorkstation.switchDownstreamPortB,
            GPUWorkstation.usbBehindSwitch, GPUWorkstation.sataBehindSwitch,
        ])
        #expect(groups[GPUWorkstation.Group.chipset]?.count == 7)
        for (index, group) in GPUWorkstation.Group.sriovVirtualFunctions.enumerated() {
            #expect(groups[group] == [GPUWorkstation.sriovVirtualFunctions[index]])
        }
        #expect(groups.count == 18)
    }

    @Test("without an IOMMU there are no groups, no group links and no class/iommu entries")
    func noIOMMUTree() throws {
        try withTemporarySysfsTree(.noIOMMU) { tree throws in
            let fileManager = FileManager.default
            #expect(try fileManager.contentsOfDirectory(atPath: tree.rootPath + "/kernel/iommu_groups") == [])
            #expect(try fileManager.contentsOfDirectory(atPath: tree.rootPath + "/class/iommu") == [])
            for device in FixtureHost.noIOMMU.devices {
                let directory = tree.pciBusPath + "/devices/" + device.address.description
                #expect(!fileManager.fileExists(atPath: directory + "/iommu_group"))
                #expect(device.driver != "vfio-pci")
            }
            #expect(!fileManager.fileExists(atPath: tree.pciBusPath + "/drivers/vfio-pci"))
        }
    }

    @Test("an AMD host exposes ivhd0 below its IOMMU function")
    func amdIOMMUUnit() throws {
        let host = FixtureHost(iommu: .amd, devices: [
            FixtureDevice(address: FixtureAddress(bus: 0, device: 0), vendorID: 0x1022, deviceID: 0x1480, classCode: 0x060000, iommuGroup: 0),
            FixtureDevice(address: FixtureAddress(bus: 0, device: 0, function: 2), vendorID: 0x1022, deviceID: 0x1481, classCode: 0x080600),
        ])
        try withTemporarySysfsTree(host) { tree throws in
            let link = try FileManager.default.destinationOfSymbolicLink(atPath: tree.rootPath + "/class/iommu/ivhd0")
            #expect(link == "../../devices/pci0000:00/0000:00:00.2/iommu/ivhd0")
            #expect(FixtureTestSupport.danglingSymlinks(under: tree.rootPath) == [])
        }
    }

    // MARK: attribute formats

    @Test("attribute files are formatted like the kernel's")
    func attributeFormats() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree throws in
            let gpu = tree.pciBusPath + "/devices/0000:01:00.0/"
            let read = FixtureTestSupport.readText
            #expect(try read(gpu + "vendor") == "0x10de\n")
            #expect(try read(gpu + "device") == "0x2204\n")
            #expect(try read(gpu + "class") == "0x030000\n")
            #expect(try read(gpu + "revision") == "0xa1\n")
            #expect(try read(gpu + "subsystem_vendor") == "0x10de\n")
            #expect(try read(gpu + "boot_vga") == "0\n")
            #expect(try read(gpu + "driver_override") == "vfio-pci\n")
            #expect(try read(gpu + "numa_node") == "-1\n")
            #expect(try read(gpu + "modalias") == "pci:v000010DEd00002204sv000010DEsd0000147Dbc03sc00i00\n")
            #expect(try read(gpu + "current_link_speed") == "8.0 GT/s PCIe\n")
            #expect(try read(gpu + "max_link_speed") == "16.0 GT/s PCIe\n")
            #expect(!FileManager.default.fileExists(atPath: gpu + "reset_method"))

            let nvme = tree.pciBusPath + "/devices/0000:02:00.0/"
            #expect(try read(nvme + "reset_method") == "flr bus\n")
            #expect(try read(nvme + "driver_override") == "(null)\n")
            #expect(!FileManager.default.fileExists(atPath: nvme + "boot_vga"))
            #expect(try read(tree.pciBusPath + "/devices/0000:00:02.0/boot_vga") == "1\n")
            #expect(try read(tree.pciBusPath + "/devices/0000:00:1c.4/secondary_bus_number") == "4\n")
            #expect(try read(tree.pciBusPath + "/devices/0000:00:1c.4/subordinate_bus_number") == "7\n")
        }
    }

    @Test("resource has 13 lines for endpoints and 17 for bridges, with real IORESOURCE flags")
    func resourceFiles() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree throws in
            let pattern = /^0x[0-9a-f]{16} 0x[0-9a-f]{16} 0x[0-9a-f]{16}$/
            for device in FixtureHost.gpuWorkstation.devices {
                let lines = try FixtureTestSupport.readText(tree.pciBusPath + "/devices/\(device.address)/resource")
                    .split(separator: "\n", omittingEmptySubsequences: false).dropLast()
                #expect(lines.count == (device.isBridge ? 17 : 13), "\(device.address)")
                #expect(lines.allSatisfy { $0.wholeMatch(of: pattern) != nil }, "\(device.address)")
            }
            let gpuLines = try FixtureTestSupport.readText(tree.pciBusPath + "/devices/0000:01:00.0/resource").split(separator: "\n")
            #expect(gpuLines[0] == "0x00000000de000000 0x00000000deffffff 0x0000000000040200")
            #expect(gpuLines[1] == "0x00000000c0000000 0x00000000cfffffff 0x000000000014220c")
            #expect(gpuLines[2] == "0x0000000000000000 0x0000000000000000 0x0000000000000000")
            #expect(gpuLines[5] == "0x000000000000e000 0x000000000000e07f 0x0000000000040101")
            #expect(gpuLines[6] == "0x00000000df000000 0x00000000df07ffff 0x0000000000046200")
            let physicalFunction = try FixtureTestSupport.readText(tree.pciBusPath + "/devices/0000:08:00.0/resource").split(separator: "\n")
            // IOV BAR 0 spans TotalVFs (64) x 64 KiB.
            #expect(physicalFunction[7] == "0x00000000a0800000 0x00000000a0bfffff 0x000000000014220c")
            let rootPort = try FixtureTestSupport.readText(tree.pciBusPath + "/devices/0000:00:01.0/resource").split(separator: "\n")
            #expect(rootPort[13] == "0x000000000000e000 0x000000000000efff 0x0000000000000100")
            #expect(rootPort[14] == "0x00000000de000000 0x00000000df0fffff 0x0000000000000200")
            #expect(rootPort[15] == "0x00000000c0000000 0x00000000d1ffffff 0x0000000000102201")
        }
    }

    @Test("config space agrees with the attributes: IDs, header, size, BARs, capabilities")
    func configSpaceAgreesWithAttributes() throws {
        let host = FixtureHost.gpuWorkstation
        try withTemporarySysfsTree(host) { tree throws in
            for device in host.devices {
                let config = try FixtureTestSupport.readBytes(tree.pciBusPath + "/devices/\(device.address)/config")
                #expect(config.count == (device.pcie == nil ? 256 : 4096), "\(device.address)")
                let isVirtualFunction = GPUWorkstation.sriovVirtualFunctions.contains(device.address)
                #expect(FixtureTestSupport.little16(config, 0) == (isVirtualFunction ? 0xffff : device.vendorID))
                #expect(FixtureTestSupport.little32(config, 8) >> 8 == device.classCode)
                #expect(config[8] == device.revision)
                #expect(config[0x0e] & 0x7f == (device.isBridge ? 1 : 0), "\(device.address)")
                if let pcie = device.pcie {
                    let offset = try #require(FixtureTestSupport.capabilityOffset(config, id: 0x10), "\(device.address)")
                    #expect((config[offset + 2] >> 4) & 0xf == pcie.portType.rawValue)
                }
                if let acs = device.acs {
                    let offset = try #require(FixtureTestSupport.extendedCapabilityOffset(config, id: 0x000d), "\(device.address)")
                    #expect(FixtureTestSupport.little16(config, offset + 4) == acs.capabilities.rawValue)
                    #expect(FixtureTestSupport.little16(config, offset + 6) == acs.control.rawValue)
                } else if device.pcie != nil {
                    #expect(FixtureTestSupport.extendedCapabilityOffset(config, id: 0x000d) == nil, "\(device.address)")
                }
                if let sriov = device.sriov {
                    let offset = try #require(FixtureTestSupport.extendedCapabilityOffset(config, id: 0x0010))
                    #expect(Int(FixtureTestSupport.little16(config, offset + 0x10)) == sriov.numVFs)
                    #expect(FixtureTestSupport.little16(config, offset + 0x1a) == sriov.vfDeviceID)
                }
                if !isVirtualFunction && !device.isBridge {
                    for bar in device.bars {
                        let register = FixtureTestSupport.little32(config, 0x10 + 4 * bar.index)
                        let mask: UInt32 = bar.space == .io ? ~0x3 : ~0xf
                        #expect(UInt64(register & mask) == bar.start & 0xffff_ffff, "\(device.address) BAR\(bar.index)")
                    }
                }
            }
            // The GPU's two functions set the multi-function bit; the NVMe alone does not.
            let gpuConfig = try FixtureTestSupport.readBytes(tree.pciBusPath + "/devices/0000:01:00.0/config")
            let nvmeConfig = try FixtureTestSupport.readBytes(tree.pciBusPath + "/devices/0000:02:00.0/config")
            #expect(gpuConfig[0x0e] == 0x80)
            #expect(nvmeConfig[0x0e] == 0x00)
            let switchPort = try FixtureTestSupport.readBytes(tree.pciBusPath + "/devices/0000:04:00.0/config")
            #expect(Array(switchPort[0x18...0x1a]) == [0x04, 0x05, 0x07])
        }
    }

    // MARK: broken trees

    @Test("each broken fixture is damaged exactly as named, and its healthy devices stay intact", arguments: BrokenDeviceCase.allCases)
    func brokenFixtures(brokenCase: BrokenDeviceCase) throws {
        try withTemporarySysfsTree(.broken(brokenCase)) { tree throws in
            let fileManager = FileManager.default
            let directory = tree.pciBusPath + "/devices/\(brokenCase.address)/"
            #expect(fileManager.fileExists(atPath: directory))
            switch brokenCase {
            case .missingVendor:
                #expect(!fileManager.fileExists(atPath: directory + "vendor"))
            case .missingClass:
                #expect(!fileManager.fileExists(atPath: directory + "class"))
            case .missingResource:
                #expect(!fileManager.fileExists(atPath: directory + "resource"))
            case .danglingDriverLink:
                #expect(try fileManager.destinationOfSymbolicLink(atPath: directory + "driver") == "../../../bus/pci/drivers/ahci")
                #expect(!fileManager.fileExists(atPath: directory + "driver"))
            case .danglingIOMMUGroupLink:
                #expect(try fileManager.destinationOfSymbolicLink(atPath: directory + "iommu_group") == "../../../kernel/iommu_groups/42")
                #expect(!fileManager.fileExists(atPath: directory + "iommu_group"))
            case .garbageResource:
                #expect(try FixtureTestSupport.readText(directory + "resource") == "hello\n")
            case .resourceTooFewColumns:
                let lines = try FixtureTestSupport.readText(directory + "resource").split(separator: "\n")
                #expect(lines.allSatisfy { $0.split(separator: " ").count == 2 })
            case .resourceNonHex:
                #expect(try FixtureTestSupport.readText(directory + "resource").hasPrefix("0x00000000dfzz0000 "))
            case .truncatedConfig:
                #expect(try FixtureTestSupport.readBytes(directory + "config").count == 10)
            }
            for healthy in BrokenHost.healthyAddresses {
                let healthyDirectory = tree.pciBusPath + "/devices/\(healthy)/"
                for attribute in ["vendor", "device", "class", "resource", "config", "driver", "iommu_group"] {
                    #expect(fileManager.fileExists(atPath: healthyDirectory + attribute), "\(healthy) \(attribute)")
                }
            }
        }
    }

    @Test("the combined broken host holds every broken device plus the healthy ones, with only the two dangling links")
    func combinedBrokenHost() throws {
        let host = FixtureHost.broken
        #expect(Set(host.devices.map(\.address)) == Set(BrokenHost.healthyAddresses + BrokenDeviceCase.allCases.map(\.address)))
        try withTemporarySysfsTree(host) { tree throws in
            #expect(FixtureTestSupport.danglingSymlinks(under: tree.rootPath) == [
                "devices/pci0000:00/0000:00:17.0/driver",
                "devices/pci0000:00/0000:00:1f.3/iommu_group",
            ])
        }
    }

    @Test("lspci 3.9 lists every device despite bad resource/config files and dangling links")
    func lspciOnRecoverableBreakage() throws {
        let recoverable: [BrokenDeviceCase] = [
            .truncatedConfig, .danglingDriverLink, .danglingIOMMUGroupLink,
            .missingResource, .garbageResource, .resourceTooFewColumns, .resourceNonHex,
        ]
        for brokenCase in recoverable {
            try withTemporarySysfsTree(.broken(brokenCase)) { tree throws in
                guard let result = try FixtureTestSupport.lspci(tree, ["-D", "-nn"]) else { return }
                #expect(result.exitCode == 0, "\(brokenCase): \(result.standardError)")
                let listed = Set(FixtureTestSupport.deviceLines(result.standardOutput).keys)
                #expect(listed == Set(BrokenHost.healthyAddresses + [brokenCase.address]), "\(brokenCase)")
            }
        }
    }

    @Test("lspci 3.9 gives up on the whole listing when vendor or class is missing", arguments: [BrokenDeviceCase.missingVendor, .missingClass])
    func lspciOnFatalBreakage(brokenCase: BrokenDeviceCase) throws {
        try withTemporarySysfsTree(.broken(brokenCase)) { tree throws in
            guard let result = try FixtureTestSupport.lspci(tree, ["-D", "-nn"]) else { return }
            #expect(result.exitCode != 0)
            #expect(result.standardError.contains("Cannot open"))
        }
    }

    // MARK: the large host

    @Test("largeSRIOVHost(2000) describes exactly 2,000 functions: 1 host bridge, 8 root ports, 8 PFs, 1,983 VFs")
    func largeHostShape() {
        let host = FixtureHost.largeSRIOVHost()
        #expect(host.devices.count == 2000)
        #expect(Set(host.devices.map(\.address)).count == 2000)
        #expect(host.devices.filter(\.isBridge).count == 8)
        let physicalFunctions = host.devices.filter { $0.sriov != nil }
        #expect(physicalFunctions.count == 8)
        #expect(physicalFunctions.map { $0.sriov?.numVFs ?? 0 }.reduce(0, +) == 1983)
        #expect(host.iommuGroups.count == 2000)
        #expect(FixtureHost.largeSRIOVHost(deviceCount: 5000).devices.count == 5000)
        #expect(FixtureHost.largeSRIOVHost(deviceCount: 17).devices.count == 17)
    }

    @Test("a built large host lists every function under bus/pci/devices")
    func largeHostBuilds() throws {
        let host = FixtureHost.largeSRIOVHost(deviceCount: 120)
        try withTemporarySysfsTree(host) { tree throws in
            let entries = try FileManager.default.contentsOfDirectory(atPath: tree.pciBusPath + "/devices")
            #expect(entries.count == 120)
            let physicalFunction = tree.pciBusPath + "/devices/0000:11:00.0"
            #expect(try FixtureTestSupport.readText(physicalFunction + "/sriov_numvfs") == "13\n")
            #expect(try FixtureTestSupport.readText(physicalFunction + "/sriov_vf_device") == "1889\n")
        }
    }

    // MARK: description validation

    @Test("inconsistent descriptions are rejected before anything is written")
    func invalidDescriptions() throws {
        let device = FixtureDevice(address: FixtureAddress(bus: 0, device: 3), vendorID: 0x8086, deviceID: 0x15f3, classCode: 0x020000)
        #expect(throws: FixtureError.duplicateAddress(device.address)) {
            try withTemporarySysfsTree(FixtureHost(iommu: nil, devices: [device, device])) { _ in }
        }
        var physicalFunction = device
        physicalFunction.sriov = FixtureSRIOV(totalVFs: 8, numVFs: 2, firstVFOffset: 8, vfDeviceID: 0x154c, vfBARs: [])
        #expect(throws: FixtureError.self) {
            try withTemporarySysfsTree(FixtureHost(iommu: nil, devices: [physicalFunction])) { _ in }
        }
        var misaligned = device
        misaligned.bars = [.memory32(0, start: 0xdf00_1000, size: 1 << 20)]
        #expect(throws: FixtureError.self) {
            try withTemporarySysfsTree(FixtureHost(iommu: nil, devices: [misaligned])) { _ in }
        }
    }

    @Test("building into a non-empty directory fails; remove() deletes the tree")
    func temporaryTreeLifecycle() throws {
        let tree = try TemporarySysfsTree.create(.broken(.missingVendor))
        #expect(FileManager.default.fileExists(atPath: tree.pciBusPath + "/devices"))
        #expect(throws: FixtureError.self) { try FixtureBuilder.build(.gpuWorkstation, at: tree.rootPath) }
        try tree.remove()
        #expect(!FileManager.default.fileExists(atPath: tree.rootPath))
    }

    @Test("PCI addresses parse and print in sysfs spelling")
    func addressParsing() {
        #expect(FixtureAddress("0000:01:00.1") == FixtureAddress(bus: 1, device: 0, function: 1))
        #expect(FixtureAddress("10000:e1:1f.7")?.description == "10000:e1:1f.7")
        #expect(FixtureAddress(bus: 0xe1, device: 0x1f, function: 7).description == "0000:e1:1f.7")
        #expect(FixtureAddress("0000:01:00") == nil)
        #expect(FixtureAddress("0000:01:20.0") == nil)
        #expect(FixtureAddress(routingID: 0x0812) == FixtureAddress(bus: 8, device: 2, function: 2))
    }
}

private func hexDigits<T: BinaryInteger>(_ value: T, _ width: Int) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(width - digits.count, 0)) + digits
}
