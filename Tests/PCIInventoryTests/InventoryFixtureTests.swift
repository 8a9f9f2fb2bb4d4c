import Foundation
import SysfsFixtures
import Testing
@testable import PCIInventory

func address(_ fixture: FixtureAddress) throws -> PCIAddress { try PCIAddress(parsing: fixture.description) }

/// Builds a fixture tree, scans it, and removes it.
func scanFixture(_ host: FixtureHost, detail: PCIInventory.Detail = .full,
                 _ body: (PCIInventory, TemporarySysfsTree) throws -> Void) throws {
    try withTemporarySysfsTree(host) { tree throws in
        let inventory = try PCIInventory.scan(root: SysfsRoot(path: tree.rootPath), detail: detail, names: PCINameDatabase())
        try body(inventory, tree)
    }
}

@Suite struct GPUWorkstationInventoryTests {
    @Test func everyDeviceWithItsIdentityDriverAndBARs() throws {
        let host = FixtureHost.gpuWorkstation
        try scanFixture(host) { inventory, _ throws in
            #expect(inventory.devices.count == host.devices.count)
            #expect(inventory.problems.isEmpty)
            for fixture in host.devices {
                let device = try #require(inventory.device(try address(fixture.address)))
                #expect(device.vendorID == fixture.vendorID && device.deviceID == fixture.deviceID)
                #expect(device.subsystemVendorID == fixture.subsystemVendorID)
                #expect(device.classCode == fixture.classCode && device.revision == fixture.revision)
                #expect(device.driver == fixture.driver)
                #expect(device.iommuGroup == fixture.iommuGroup)
                #expect(device.problems.isEmpty, "\(device.address): \(device.problems)")
                let expectedBARs = fixture.bars.sorted { $0.index < $1.index }
                #expect(device.bars.map(\.index) == expectedBARs.map(\.index), "\(device.address)")
                for (bar, expected) in zip(device.bars, expectedBARs) {
                    #expect(bar.start == expected.start && bar.size == expected.size, "\(device.address) BAR\(bar.index)")
                    #expect(bar.is64Bit == expected.is64Bit && bar.prefetchable == expected.isPrefetchable)
                    #expect((bar.kind == .io) == (expected.space == .io))
                }
                #expect(device.resetMethods == fixture.resetMethods)
                #expect(device.isBridge == fixture.isBridge)
            }
        }
    }

    @Test func groupsAndViabilityAsTheKernelJudges() throws {
        try scanFixture(FixtureHost.gpuWorkstation, detail: .summary) { inventory, _ throws in
            #expect(inventory.iommu.isAvailable && inventory.iommu.units == ["dmar0"])
            // The GPU and its HDMI audio function share a group, both on vfio-pci: viable.
            let gpuGroup = try #require(inventory.group(GPUWorkstation.Group.gpu))
            #expect(gpuGroup.devices == [try address(GPUWorkstation.gpu), try address(GPUWorkstation.gpuAudio)])
            #expect(gpuGroup.isViable)
            // Behind the switch without ACS: both downstream ports and both endpoints in one group,
            // viable (vfio-pci, pci-stub, ports on pcieport).
            let switchGroup = try #require(inventory.group(GPUWorkstation.Group.behindSwitch))
            #expect(switchGroup.devices.count == 4)
            #expect(switchGroup.devices.contains(try address(GPUWorkstation.usbBehindSwitch)))
            #expect(switchGroup.devices.contains(try address(GPUWorkstation.sataBehindSwitch)))
            #expect(switchGroup.isViable)
            // NVMe on its host driver blocks its group, and the blocker says what to do.
            let nvme = try #require(inventory.group(GPUWorkstation.Group.nvme))
            #expect(!nvme.isViable)
            #expect(nvme.blockers.map(\.address) == [GPUWorkstation.nvme.description])
            #expect(nvme.blockers.first?.reason.contains("nvme") == true)
            #expect(nvme.blockers.first?.reason.contains("vfio-pci") == true)
            // The chipset group names every member on a host driver, and only those.
            let chipset = try #require(inventory.group(GPUWorkstation.Group.chipset))
            #expect(Set(chipset.blockers.map(\.address)) == Set([GPUWorkstation.usbController, GPUWorkstation.sataController,
                                                                  GPUWorkstation.chipsetAudio, GPUWorkstation.smbus,
                                                                  GPUWorkstation.spiController].map(\.description)))
            // VFs: iavf blocks, vfio-pci and unbound do not.
            let viability = GPUWorkstation.Group.sriovVirtualFunctions.map { inventory.group($0)?.isViable }
            #expect(viability == [false, true, true, true])
        }
    }

    @Test func detailsForShow() throws {
        try scanFixture(FixtureHost.gpuWorkstation) { inventory, _ throws in
            let igpu = try #require(inventory.device(try address(GPUWorkstation.integratedGraphics)))
            #expect(igpu.bootVGA == true)
            let gpu = try #require(inventory.device(try address(GPUWorkstation.gpu)))
            #expect(gpu.bootVGA == false)
            #expect(gpu.parentBridges == [try address(GPUWorkstation.pegRootPort)])
            #expect(gpu.driverOverride == "vfio-pci")
            #expect(gpu.names.vendor == "NVIDIA Corporation")
            #expect(gpu.names.device?.contains("3090") == true)
            // Root ports isolate; the switch's downstream ports do not.
            let rootPort = try #require(inventory.device(try address(GPUWorkstation.pegRootPort)))
            #expect(rootPort.expressPortType == .rootPort)
            #expect(rootPort.accessControlServices?.isolates == true)
            let portA = try #require(inventory.device(try address(GPUWorkstation.switchDownstreamPortA)))
            #expect(portA.expressPortType == .downstreamSwitchPort)
            #expect(portA.accessControlServices == nil)
            let portB = try #require(inventory.device(try address(GPUWorkstation.switchDownstreamPortB)))
            #expect(portB.accessControlServices?.enabled.isEmpty == true)
            #expect(portB.accessControlServices?.isolates == false)
            let usb = try #require(inventory.device(try address(GPUWorkstation.usbBehindSwitch)))
            #expect(usb.parentBridges == [try address(GPUWorkstation.switchDownstreamPortA), try address(GPUWorkstation.switchUpstreamPort),
                                          try address(GPUWorkstation.switchRootPort)])
            // SR-IOV both ways.
            let pf = try #require(inventory.device(try address(GPUWorkstation.sriovPhysicalFunction)))
            #expect(pf.sriov?.enabledVFs == 4 && pf.sriov?.totalVFs == 64)
            #expect(pf.sriov?.virtualFunctions == (try GPUWorkstation.sriovVirtualFunctions.map(address)))
            let vf = try #require(inventory.device(try address(GPUWorkstation.sriovVirtualFunctions[1])))
            #expect(vf.physicalFunction == pf.address)
        }
    }

    @Test func showAndListThroughTheCLIWithSysfsRootAndEnvironment() throws {
        try withTemporarySysfsTree(FixtureHost.gpuWorkstation) { tree throws in
            let viaOption = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "show", "01:00.0", "--json"])
            #expect(viaOption.status == 0, "\(viaOption.stderr)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(viaOption.stdout.utf8)) as? [String: Any])
            #expect(object["group_siblings"] as? [String] == ["0000:01:00.1"])
            #expect(object["group_viable"] as? Bool == true)
            #expect((object["parent_bridges"] as? [[String: Any]])?.first?["address"] as? String == "0000:00:01.0")
            let viaEnvironment = try VfioctlBinary.run(["list"], environment: ["VFIOCTL_SYSFS_ROOT": tree.rootPath])
            #expect(viaEnvironment.status == 0)
            #expect(viaEnvironment.stdout.contains("0000:01:00.0 VGA compatible controller [0300]: NVIDIA Corporation"))
            #expect(viaEnvironment.stdout.contains("group 8  driver vfio-pci"))
            // The option wins over the environment.
            let both = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "list"], environment: ["VFIOCTL_SYSFS_ROOT": "/nonexistent"])
            #expect(both.status == 0)
            let groups = try VfioctlBinary.run(["groups", "--sysfs-root", tree.rootPath])
            #expect(groups.stdout.contains("IOMMU group 9: not viable"))
            #expect(groups.stdout.contains("blocks: 0000:02:00.0: bound to host driver nvme"))
        }
    }

    @Test func withoutPCIIDsNamesAreAbsentAndIDsRemain() throws {
        try withTemporarySysfsTree(FixtureHost.gpuWorkstation) { tree throws in
            let result = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "list", "--json"],
                                               environment: ["VFIOCTL_PCI_IDS": "/nonexistent/pci.ids"])
            #expect(result.status == 0)
            let devices = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
            let gpu = try #require(devices.first { $0["address"] as? String == "0000:01:00.0" })
            #expect(gpu["vendor_id"] as? String == "10de")
            // Names come from pci.ids or, where libpci has it, udev's hwdb; without pci.ids the
            // hwdb may still answer, so only the IDs are certain.
            #expect(gpu["device_id"] as? String == "2204")
        }
    }
}

@Suite struct NoIOMMUFixtureTests {
    @Test func devicesListedAndTheMissingIOMMUExplained() throws {
        let host = FixtureHost.noIOMMU
        try scanFixture(host, detail: .summary) { inventory, tree throws in
            #expect(inventory.devices.count == host.devices.count)
            #expect(inventory.groups.isEmpty && !inventory.iommu.isAvailable)
            #expect(inventory.devices.allSatisfy { $0.iommuGroup == nil })
            let result = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "groups"])
            #expect(result.status == 0)
            #expect(result.stdout.contains("No IOMMU groups"))
            #expect(result.stdout.contains("VT-d"))
            let list = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "list"])
            #expect(list.stdout.split(separator: "\n").filter { $0.hasPrefix("0000:") }.count == host.devices.count)
        }
    }
}

@Suite struct BrokenTreeTests {
    @Test(arguments: BrokenDeviceCase.allCases)
    func damageIsReportedNotFatal(brokenCase: BrokenDeviceCase) throws {
        try scanFixture(FixtureHost.broken(brokenCase)) { inventory, tree throws in
            for healthy in BrokenHost.healthyAddresses {
                let device = try #require(inventory.device(try address(healthy)))
                #expect(device.vendorID != nil)
            }
            let broken = try #require(inventory.device(try address(brokenCase.address)), "the broken device is still listed")
            #expect(!broken.problems.isEmpty, "\(brokenCase) reported no problem")
            let words: [BrokenDeviceCase: String] = [
                .missingVendor: "vendor", .missingClass: "class", .missingResource: "resource",
                .danglingDriverLink: "driver link", .danglingIOMMUGroupLink: "iommu_group",
                .garbageResource: "resource line", .resourceTooFewColumns: "resource line",
                .resourceNonHex: "resource line", .truncatedConfig: "config space",
            ]
            if let word = words[brokenCase] {
                #expect(broken.problems.joined(separator: " ").contains(word), "\(brokenCase): \(broken.problems)")
            }
            for arguments in [["list"], ["list", "--json"], ["groups"], ["show", brokenCase.address.description]] {
                let result = try VfioctlBinary.run(["--sysfs-root", tree.rootPath] + arguments)
                #expect(result.status == 0, "\(arguments) on \(brokenCase): \(result.stderr)")
                #expect(!result.stderr.contains("Fatal error"))
            }
        }
    }

    @Test func missingVendorTakenFromConfigSpace() throws {
        try scanFixture(FixtureHost.broken(.missingVendor), detail: .summary) { inventory, _ throws in
            let device = try #require(inventory.device(try address(BrokenDeviceCase.missingVendor.address)))
            #expect(device.vendorID != nil)
            #expect(device.problems.contains { $0.contains("taken from config space") })
        }
    }
}

@Suite struct FixtureLspciCrossCheckTests {
    @Test func everyHealthyFixtureAgreesWithLspci() throws {
        try #require(Lspci.isInstalled, "lspci is not installed (apt-get install pciutils)")
        for host in [FixtureHost.gpuWorkstation, FixtureHost.noIOMMU, FixtureHost.largeSRIOVHost(deviceCount: 120)] {
            try scanFixture(host, detail: .summary) { inventory, tree throws in
                let records = try Lspci.records(sysfsRoot: tree.rootPath)
                #expect(records.count == host.devices.count)
                let problems = Lspci.disagreements(inventory, records)
                #expect(problems.isEmpty, "\(problems.prefix(10).joined(separator: "\n"))")
            }
        }
    }

    @Test func brokenFixturesAgreeWhereLspciCanRead() throws {
        try #require(Lspci.isInstalled)
        // lspci aborts the whole listing without vendor or class; every other case it reads.
        for brokenCase in BrokenDeviceCase.allCases where brokenCase != .missingVendor && brokenCase != .missingClass {
            try scanFixture(FixtureHost.broken(brokenCase), detail: .summary) { inventory, tree throws in
                let problems = Lspci.disagreements(inventory, try Lspci.records(sysfsRoot: tree.rootPath))
                if brokenCase == .danglingDriverLink {
                    // Deliberate: vfioctl keeps the driver a dangling link names (a member that may
                    // be bound must block its group); lspci resolves the link and shows none.
                    #expect(problems == ["\(brokenCase.address) driver: vfioctl \(BrokenDeviceCase.danglingDriverName), lspci nil"])
                } else {
                    #expect(problems.isEmpty, "\(brokenCase): \(problems)")
                }
            }
        }
    }

    @Test func theCrossCheckItselfCatchesADisagreement() throws {
        try scanFixture(FixtureHost.gpuWorkstation, detail: .summary) { inventory, tree throws in
            var records = try Lspci.records(sysfsRoot: tree.rootPath)
            records[0].driver = "not-the-driver"
            records[1].deviceID = "ffff"
            #expect(Lspci.disagreements(inventory, records).count == 2)
        }
    }
}
