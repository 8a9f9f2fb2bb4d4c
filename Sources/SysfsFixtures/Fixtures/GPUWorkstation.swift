/// Addresses and groups of `FixtureHost.gpuWorkstation`, so tests name devices instead of spelling BDFs.
///
/// An ASUS Z390 board with a Core i7-8700K (Coffee Lake-S) and Cannon Lake PCH, Intel VT-d on.
/// Root ports have ACS enabled (the fixture's choice: real Coffee Lake PEG ports lack ACS).
public enum GPUWorkstation {
    public static let hostBridge = FixtureAddress(bus: 0x00, device: 0x00)
    public static let pegRootPort = FixtureAddress(bus: 0x00, device: 0x01)
    public static let integratedGraphics = FixtureAddress(bus: 0x00, device: 0x02)
    public static let usbController = FixtureAddress(bus: 0x00, device: 0x14)
    public static let sharedSRAM = FixtureAddress(bus: 0x00, device: 0x14, function: 2)
    public static let sataController = FixtureAddress(bus: 0x00, device: 0x17)
    public static let nvmeRootPort = FixtureAddress(bus: 0x00, device: 0x1b)
    public static let nicRootPort = FixtureAddress(bus: 0x00, device: 0x1c)
    public static let switchRootPort = FixtureAddress(bus: 0x00, device: 0x1c, function: 4)
    public static let sriovRootPort = FixtureAddress(bus: 0x00, device: 0x1d)
    public static let isaBridge = FixtureAddress(bus: 0x00, device: 0x1f)
    public static let chipsetAudio = FixtureAddress(bus: 0x00, device: 0x1f, function: 3)
    public static let smbus = FixtureAddress(bus: 0x00, device: 0x1f, function: 4)
    public static let spiController = FixtureAddress(bus: 0x00, device: 0x1f, function: 5)
    public static let gpu = FixtureAddress(bus: 0x01, device: 0x00)
    public static let gpuAudio = FixtureAddress(bus: 0x01, device: 0x00, function: 1)
    public static let nvme = FixtureAddress(bus: 0x02, device: 0x00)
    public static let ethernet = FixtureAddress(bus: 0x03, device: 0x00)
    public static let switchUpstreamPort = FixtureAddress(bus: 0x04, device: 0x00)
    public static let switchDownstreamPortA = FixtureAddress(bus: 0x05, device: 0x08)
    public static let switchDownstreamPortB = FixtureAddress(bus: 0x05, device: 0x10)
    public static let usbBehindSwitch = FixtureAddress(bus: 0x06, device: 0x00)
    public static let sataBehindSwitch = FixtureAddress(bus: 0x07, device: 0x00)
    public static let sriovPhysicalFunction = FixtureAddress(bus: 0x08, device: 0x00)
    /// VFs 0...3 at 08:02.0-08:02.3 (First VF Offset 16, stride 1).
    public static let sriovVirtualFunctions = (0..<4).map { FixtureAddress(bus: 0x08, device: 0x02, function: UInt8($0)) }

    /// IOMMU group numbers, assigned in address order of each group's first member.
    public enum Group {
        public static let hostBridge = 0
        public static let pegRootPort = 1
        public static let integratedGraphics = 2
        /// USB, shared SRAM, SATA, ISA bridge, audio, SMBus, SPI: chipset functions in one group.
        public static let chipset = 3
        public static let nvmeRootPort = 4
        public static let nicRootPort = 5
        public static let switchRootPort = 6
        public static let sriovRootPort = 7
        /// GPU + its HDMI audio function, both on vfio-pci.
        public static let gpu = 8
        public static let nvme = 9
        public static let ethernet = 10
        public static let switchUpstreamPort = 11
        /// Both downstream ports (no ACS / ACS disabled) and the two endpoints behind them.
        public static let behindSwitch = 12
        public static let sriovPhysicalFunction = 13
        /// One group per VF: 14, 15, 16, 17.
        public static let sriovVirtualFunctions = [14, 15, 16, 17]
    }
}

private let asusBoard: UInt16 = 0x1043
private let asusBoardSubsystem: UInt16 = 0x8694
private let intel: UInt16 = 0x8086

extension FixtureHost {
    /// A VFIO workstation: passthrough GPU, SR-IOV NIC, a PCIe switch without ACS and the usual chipset.
    /// See `GPUWorkstation` for addresses and groups.
    public static var gpuWorkstation: FixtureHost {
        var devices: [FixtureDevice] = []

        // MARK: root bus 00: CPU and PCH functions
        devices.append(FixtureDevice(
            address: GPUWorkstation.hostBridge, vendorID: intel, deviceID: 0x3ec2,
            subsystemVendorID: asusBoard, subsystemDeviceID: asusBoardSubsystem,
            classCode: 0x060000, revision: 0x07, driver: "skl_uncore", iommuGroup: GPUWorkstation.Group.hostBridge
        ))
        devices.append(rootPort(
            GPUWorkstation.pegRootPort, deviceID: 0x1901, revision: 0x07, secondaryBus: 0x01,
            link: .init(maxSpeed: .gen3, maxWidth: 16), slot: 1, group: GPUWorkstation.Group.pegRootPort, irq: 122
        ))
        devices.append(FixtureDevice(
            address: GPUWorkstation.integratedGraphics, vendorID: intel, deviceID: 0x3e92,
            subsystemVendorID: asusBoard, subsystemDeviceID: 0x8694,
            classCode: 0x030000, revision: 0x00, driver: "i915", iommuGroup: GPUWorkstation.Group.integratedGraphics,
            bars: [
                .memory64(0, start: 0xdd00_0000, size: 16 << 20),
                .memory64(2, start: 0xb000_0000, size: 256 << 20, prefetchable: true),
                .io(4, start: 0xf000, size: 64),
            ],
            resetMethods: ["flr"], bootVGA: true, irq: 139,
            pcie: FixturePCIe(portType: .rootComplexIntegratedEndpoint)
        ))
        devices.append(chipsetFunction(
            GPUWorkstation.usbController, deviceID: 0xa36d, classCode: 0x0c0330, driver: "xhci_hcd",
            bars: [.memory64(0, start: 0xdf23_0000, size: 64 << 10)], irq: 124
        ))
        devices.append(chipsetFunction(
            GPUWorkstation.sharedSRAM, deviceID: 0xa36f, classCode: 0x050000, driver: nil,
            bars: [.memory64(0, start: 0xdf24_c000, size: 8 << 10), .memory64(2, start: 0xdf24_f000, size: 4 << 10)], irq: 255
        ))
        devices.append(chipsetFunction(
            GPUWorkstation.sataController, deviceID: 0xa352, classCode: 0x010601, driver: "ahci",
            bars: [
                .memory32(0, start: 0xdf24_8000, size: 8 << 10),
                .memory32(1, start: 0xdf24_e000, size: 256),
                .io(2, start: 0xf090, size: 8),
                .io(3, start: 0xf080, size: 4),
                .io(4, start: 0xf060, size: 32),
                .memory32(5, start: 0xdf24_d000, size: 2 << 10),
            ],
            irq: 125
        ))
        devices.append(rootPort(
            GPUWorkstation.nvmeRootPort, deviceID: 0xa340, revision: 0xf0, secondaryBus: 0x02,
            link: .init(maxSpeed: .gen3, maxWidth: 4), slot: nil, group: GPUWorkstation.Group.nvmeRootPort, irq: 123
        ))
        devices.append(rootPort(
            GPUWorkstation.nicRootPort, deviceID: 0xa338, revision: 0xf0, secondaryBus: 0x03,
            link: .init(maxSpeed: .gen3, maxWidth: 1, currentSpeed: .gen2), slot: nil, group: GPUWorkstation.Group.nicRootPort, irq: 126
        ))
        devices.append(rootPort(
            GPUWorkstation.switchRootPort, deviceID: 0xa33c, revision: 0xf0, secondaryBus: 0x04,
            link: .init(maxSpeed: .gen3, maxWidth: 4), slot: 3, group: GPUWorkstation.Group.switchRootPort, irq: 127
        ))
        devices.append(rootPort(
            GPUWorkstation.sriovRootPort, deviceID: 0xa330, revision: 0xf0, secondaryBus: 0x08,
            link: .init(maxSpeed: .gen3, maxWidth: 4), slot: 4, group: GPUWorkstation.Group.sriovRootPort, irq: 128
        ))
        devices.append(chipsetFunction(GPUWorkstation.isaBridge, deviceID: 0xa305, classCode: 0x060100, driver: nil, bars: [], irq: 0, resetMethods: []))
        devices.append(chipsetFunction(
            GPUWorkstation.chipsetAudio, deviceID: 0xa348, classCode: 0x040300, driver: "snd_hda_intel",
            bars: [.memory64(0, start: 0xdf24_4000, size: 16 << 10), .memory64(4, start: 0xdf10_0000, size: 1 << 20)], irq: 141
        ))
        devices.append(chipsetFunction(
            GPUWorkstation.smbus, deviceID: 0xa323, classCode: 0x0c0500, driver: "i801_smbus",
            bars: [.memory64(0, start: 0xdf24_a000, size: 256), .io(4, start: 0xf040, size: 32)], irq: 16, resetMethods: []
        ))
        devices.append(chipsetFunction(
            GPUWorkstation.spiController, deviceID: 0xa324, classCode: 0x0c8000, driver: "intel-spi",
            bars: [.memory32(0, start: 0xfe01_0000, size: 4 << 10)], irq: 0, resetMethods: []
        ))

        // MARK: 01: RTX 3090 and its HDMI audio, both handed to vfio-pci
        // No FLR, and a sibling function on the bus rules out a bus reset: the kernel lists no reset method.
        let gpuLink = FixturePCIe.Link(maxSpeed: .gen4, maxWidth: 16, currentSpeed: .gen3)
        devices.append(FixtureDevice(
            address: GPUWorkstation.gpu, vendorID: 0x10de, deviceID: 0x2204,
            subsystemVendorID: 0x10de, subsystemDeviceID: 0x147d,
            classCode: 0x030000, revision: 0xa1, driver: "vfio-pci", driverOverride: "vfio-pci",
            iommuGroup: GPUWorkstation.Group.gpu,
            bars: [
                .memory32(0, start: 0xde00_0000, size: 16 << 20),
                .memory64(1, start: 0xc000_0000, size: 256 << 20, prefetchable: true),
                .memory64(3, start: 0xd000_0000, size: 32 << 20, prefetchable: true),
                .io(5, start: 0xe000, size: 128),
            ],
            rom: FixtureROM(start: 0xdf00_0000, size: 512 << 10),
            bootVGA: false, irq: 16,
            pcie: FixturePCIe(portType: .endpoint, link: gpuLink)
        ))
        devices.append(FixtureDevice(
            address: GPUWorkstation.gpuAudio, vendorID: 0x10de, deviceID: 0x1aef,
            subsystemVendorID: 0x10de, subsystemDeviceID: 0x147d,
            classCode: 0x040300, revision: 0xa1, driver: "vfio-pci", driverOverride: "vfio-pci",
            iommuGroup: GPUWorkstation.Group.gpu,
            bars: [.memory32(0, start: 0xdf08_0000, size: 16 << 10)],
            irq: 17,
            pcie: FixturePCIe(portType: .endpoint, link: gpuLink)
        ))

        // MARK: 02: Samsung 980 PRO, 03: I225-V
        devices.append(FixtureDevice(
            address: GPUWorkstation.nvme, vendorID: 0x144d, deviceID: 0xa80a,
            subsystemVendorID: 0x144d, subsystemDeviceID: 0xa801,
            classCode: 0x010802, revision: 0x00, driver: "nvme", iommuGroup: GPUWorkstation.Group.nvme,
            bars: [.memory64(0, start: 0xdf40_0000, size: 16 << 10)],
            resetMethods: ["flr", "bus"], irq: 16,
            pcie: FixturePCIe(portType: .endpoint, link: .init(maxSpeed: .gen4, maxWidth: 4, currentSpeed: .gen3))
        ))
        devices.append(FixtureDevice(
            address: GPUWorkstation.ethernet, vendorID: intel, deviceID: 0x15f3,
            subsystemVendorID: intel, subsystemDeviceID: 0x0003,
            classCode: 0x020000, revision: 0x03, driver: "igc", iommuGroup: GPUWorkstation.Group.ethernet,
            bars: [.memory32(0, start: 0xdf50_0000, size: 1 << 20), .memory32(3, start: 0xdf60_0000, size: 16 << 10)],
            resetMethods: ["flr", "bus"], irq: 17,
            pcie: FixturePCIe(portType: .endpoint, link: .init(maxSpeed: .gen2, maxWidth: 1))
        ))

        // MARK: 04-07: PLX PEX 8747 switch; downstream ports do not isolate (one lacks ACS, one has it disabled)
        let plx: UInt16 = 0x10b5
        devices.append(FixtureDevice(
            address: GPUWorkstation.switchUpstreamPort, vendorID: plx, deviceID: 0x8747,
            subsystemVendorID: plx, subsystemDeviceID: 0x8747,
            classCode: 0x060400, revision: 0xca, driver: "pcieport", iommuGroup: GPUWorkstation.Group.switchUpstreamPort,
            bars: [.memory32(0, start: 0xdf70_0000, size: 256 << 10)],
            irq: 129,
            pcie: FixturePCIe(portType: .upstreamSwitchPort, link: .init(maxSpeed: .gen3, maxWidth: 16, currentWidth: 4)),
            secondaryBus: 0x05
        ))
        devices.append(FixtureDevice(
            address: GPUWorkstation.switchDownstreamPortA, vendorID: plx, deviceID: 0x8747,
            subsystemVendorID: plx, subsystemDeviceID: 0x8747,
            classCode: 0x060400, revision: 0xca, driver: "pcieport", iommuGroup: GPUWorkstation.Group.behindSwitch,
            irq: 130,
            pcie: FixturePCIe(portType: .downstreamSwitchPort, link: .init(maxSpeed: .gen3, maxWidth: 8, currentSpeed: .gen2, currentWidth: 1)),
            acs: nil,
            secondaryBus: 0x06
        ))
        devices.append(FixtureDevice(
            address: GPUWorkstation.switchDownstreamPortB, vendorID: plx, deviceID: 0x8747,
            subsystemVendorID: plx, subsystemDeviceID: 0x8747,
            classCode: 0x060400, revision: 0xca, driver: "pcieport", iommuGroup: GPUWorkstation.Group.behindSwitch,
            irq: 131,
            pcie: FixturePCIe(portType: .downstreamSwitchPort, link: .init(maxSpeed: .gen3, maxWidth: 8, currentSpeed: .gen2, currentWidth: 2)),
            acs: .disabled,
            secondaryBus: 0x07
        ))
        devices.append(FixtureDevice(
            address: GPUWorkstation.usbBehindSwitch, vendorID: 0x1912, deviceID: 0x0015,
            subsystemVendorID: 0x1912, subsystemDeviceID: 0x0015,
            classCode: 0x0c0330, revision: 0x02, driver: "vfio-pci", iommuGroup: GPUWorkstation.Group.behindSwitch,
            bars: [.memory64(0, start: 0xdf80_0000, size: 8 << 10)],
            resetMethods: ["bus"], irq: 18,
            pcie: FixturePCIe(portType: .endpoint, link: .init(maxSpeed: .gen2, maxWidth: 1))
        ))
        devices.append(FixtureDevice(
            address: GPUWorkstation.sataBehindSwitch, vendorID: 0x1b21, deviceID: 0x0612,
            subsystemVendorID: 0x1b21, subsystemDeviceID: 0x1060,
            classCode: 0x010601, revision: 0x02, driver: "pci-stub", iommuGroup: GPUWorkstation.Group.behindSwitch,
            bars: [
                .io(0, start: 0xd050, size: 8),
                .io(1, start: 0xd040, size: 4),
                .io(2, start: 0xd030, size: 8),
                .io(3, start: 0xd020, size: 4),
                .io(4, start: 0xd000, size: 32),
                .memory32(5, start: 0xdf90_0000, size: 512),
            ],
            resetMethods: ["bus"], irq: 19,
            pcie: FixturePCIe(portType: .endpoint, link: .init(maxSpeed: .gen2, maxWidth: 2))
        ))

        // MARK: 08: X710 PF with 4 VFs enabled
        var physicalFunction = FixtureDevice(
            address: GPUWorkstation.sriovPhysicalFunction, vendorID: intel, deviceID: 0x1572,
            subsystemVendorID: intel, subsystemDeviceID: 0x0007,
            classCode: 0x020000, revision: 0x02, driver: "i40e", iommuGroup: GPUWorkstation.Group.sriovPhysicalFunction,
            bars: [
                .memory64(0, start: 0xa000_0000, size: 8 << 20, prefetchable: true),
                .memory64(3, start: 0xa0d0_0000, size: 32 << 10, prefetchable: true),
            ],
            rom: FixtureROM(start: 0xdfa0_0000, size: 512 << 10),
            // VFs share bus 08 with the PF, so only FLR is left.
            resetMethods: ["flr"], irq: 16,
            pcie: FixturePCIe(portType: .endpoint, link: .init(maxSpeed: .gen3, maxWidth: 8, currentWidth: 4))
        )
        physicalFunction.sriov = FixtureSRIOV(
            totalVFs: 64, numVFs: 4, firstVFOffset: 16, vfStride: 1, vfDeviceID: 0x154c,
            vfBARs: [
                .memory64(0, start: 0xa080_0000, size: 64 << 10, prefetchable: true),
                .memory64(3, start: 0xa0c0_0000, size: 16 << 10, prefetchable: true),
            ]
        )
        devices.append(physicalFunction)
        let vfDrivers: [String?] = ["iavf", "vfio-pci", "vfio-pci", nil]
        devices += FixtureDevice.virtualFunctions(of: physicalFunction) { index, virtualFunction in
            virtualFunction.driver = vfDrivers[index]
            virtualFunction.driverOverride = index == 1 ? "vfio-pci" : nil
            virtualFunction.iommuGroup = GPUWorkstation.Group.sriovVirtualFunctions[index]
        }

        return FixtureHost(iommu: .intel, iommuDomainType: .dmaFQ, cpuCount: 12, numaNodeCount: 1, devices: devices)
    }

    /// The same machine with VT-d off: no `class/iommu` entries, an empty `kernel/iommu_groups`,
    /// no `iommu_group` links, and nothing on vfio-pci (it cannot bind without an IOMMU).
    public static var noIOMMU: FixtureHost {
        var host = gpuWorkstation
        host.iommu = nil
        host.devices = host.devices.map { device in
            var device = device
            device.iommuGroup = nil
            if device.driver == "vfio-pci" {
                device.driver = switch device.classCode >> 8 {
                case 0x0300: "nouveau"
                case 0x0403: "snd_hda_intel"
                case 0x0c03: "xhci_hcd"
                default: nil
                }
                device.driverOverride = nil
            }
            return device
        }
        return host
    }

    private static func rootPort(
        _ address: FixtureAddress, deviceID: UInt16, revision: UInt8, secondaryBus: UInt8,
        link: FixturePCIe.Link, slot: Int?, group: Int, irq: Int
    ) -> FixtureDevice {
        FixtureDevice(
            address: address, vendorID: intel, deviceID: deviceID,
            subsystemVendorID: asusBoard, subsystemDeviceID: asusBoardSubsystem,
            classCode: 0x060400, revision: revision, driver: "pcieport", iommuGroup: group,
            irq: irq,
            pcie: FixturePCIe(portType: .rootPort, link: link, slotNumber: slot),
            acs: .enabled,
            secondaryBus: secondaryBus
        )
    }

    private static func chipsetFunction(
        _ address: FixtureAddress, deviceID: UInt16, classCode: UInt32, driver: String?,
        bars: [FixtureBAR], irq: Int, resetMethods: [String] = ["pm"]
    ) -> FixtureDevice {
        FixtureDevice(
            address: address, vendorID: intel, deviceID: deviceID,
            subsystemVendorID: asusBoard, subsystemDeviceID: asusBoardSubsystem,
            classCode: classCode, revision: 0x10, driver: driver, iommuGroup: GPUWorkstation.Group.chipset,
            bars: bars, resetMethods: resetMethods, irq: irq
        )
    }
}
