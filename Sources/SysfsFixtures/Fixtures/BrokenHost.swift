/// One way a device directory can be damaged; each case is a device of `FixtureHost.broken`.
/// Readers should skip or flag the device with a clear message and still list the healthy ones.
public enum BrokenDeviceCase: String, CaseIterable, Sendable, CustomStringConvertible {
    /// No `vendor` file.
    case missingVendor
    /// No `class` file.
    case missingClass
    /// No `resource` file.
    case missingResource
    /// `driver` points at `bus/pci/drivers/ahci`, which does not exist.
    case danglingDriverLink
    /// `iommu_group` points at `kernel/iommu_groups/42`, which does not exist.
    case danglingIOMMUGroupLink
    /// `resource` holds `hello\n`.
    case garbageResource
    /// `resource` lines have two columns instead of three.
    case resourceTooFewColumns
    /// `resource` lines look hex but carry non-hex digits (`0x00000000dfzz0000`).
    case resourceNonHex
    /// `config` is 10 bytes long.
    case truncatedConfig

    public var description: String { rawValue }

    /// Where the broken device sits (root bus 00, Cannon Lake PCH functions).
    public var address: FixtureAddress {
        switch self {
        case .missingVendor: FixtureAddress(bus: 0, device: 0x02)
        case .missingClass: FixtureAddress(bus: 0, device: 0x12)
        case .missingResource: FixtureAddress(bus: 0, device: 0x16)
        case .danglingDriverLink: FixtureAddress(bus: 0, device: 0x17)
        case .danglingIOMMUGroupLink: FixtureAddress(bus: 0, device: 0x1f, function: 3)
        case .garbageResource: FixtureAddress(bus: 0, device: 0x1f, function: 4)
        case .resourceTooFewColumns: FixtureAddress(bus: 0, device: 0x1f, function: 5)
        case .resourceNonHex: FixtureAddress(bus: 0, device: 0x1f, function: 6)
        case .truncatedConfig: FixtureAddress(bus: 0, device: 0x14, function: 2)
        }
    }

    /// The group number the dangling `iommu_group` link names.
    public static let danglingGroupNumber = 42
    /// The driver name the dangling `driver` link names.
    public static let danglingDriverName = "ahci"

    public var device: FixtureDevice {
        func pchFunction(_ deviceID: UInt16, classCode: UInt32, driver: String?, group: Int,
                         bars: [FixtureBAR], faults: [FixtureFault]) -> FixtureDevice {
            FixtureDevice(
                address: address, vendorID: 0x8086, deviceID: deviceID,
                subsystemVendorID: 0x1043, subsystemDeviceID: 0x8694,
                classCode: classCode, revision: 0x10, driver: driver, iommuGroup: group,
                bars: bars, resetMethods: ["pm"], irq: 16, faults: faults
            )
        }
        let twoColumns = String(repeating: "0x00000000df000000 0x00000000df0fffff\n", count: 13)
        let nonHex = "0x00000000dfzz0000 0x00000000dfzzffff 0x0000000000040200\n"
            + String(repeating: "0x0000000000000000 0x0000000000000000 0x0000000000000000\n", count: 12)
        switch self {
        case .missingVendor:
            var device = pchFunction(0x3e92, classCode: 0x030000, driver: "i915", group: 4,
                                     bars: [.memory64(0, start: 0xdd00_0000, size: 16 << 20)], faults: [.missingAttribute("vendor")])
            device.bootVGA = true
            device.pcie = FixturePCIe(portType: .rootComplexIntegratedEndpoint)
            device.revision = 0x00
            return device
        case .missingClass:
            return pchFunction(0xa379, classCode: 0x118000, driver: "intel_pch_thermal", group: 5,
                               bars: [.memory64(0, start: 0xdf24_b000, size: 4 << 10)], faults: [.missingAttribute("class")])
        case .missingResource:
            return pchFunction(0xa360, classCode: 0x078000, driver: "mei_me", group: 6,
                               bars: [.memory64(0, start: 0xdf24_9000, size: 4 << 10)], faults: [.missingAttribute("resource")])
        case .danglingDriverLink:
            return pchFunction(0xa352, classCode: 0x010601, driver: Self.danglingDriverName, group: 7,
                               bars: [.memory32(0, start: 0xdf24_8000, size: 8 << 10)],
                               faults: [.danglingDriverLink(driverName: Self.danglingDriverName)])
        case .danglingIOMMUGroupLink:
            return pchFunction(0xa348, classCode: 0x040300, driver: "snd_hda_intel", group: Self.danglingGroupNumber,
                               bars: [.memory64(0, start: 0xdf24_4000, size: 16 << 10)],
                               faults: [.danglingIOMMUGroupLink(group: Self.danglingGroupNumber)])
        case .garbageResource:
            return pchFunction(0xa323, classCode: 0x0c0500, driver: "i801_smbus", group: 8,
                               bars: [.memory64(0, start: 0xdf24_a000, size: 256)],
                               faults: [.replaceAttribute("resource", contents: "hello\n")])
        case .resourceTooFewColumns:
            return pchFunction(0xa324, classCode: 0x0c8000, driver: "intel-spi", group: 8,
                               bars: [.memory32(0, start: 0xfe01_0000, size: 4 << 10)],
                               faults: [.replaceAttribute("resource", contents: twoColumns)])
        case .resourceNonHex:
            return pchFunction(0x15bc, classCode: 0x020000, driver: "e1000e", group: 8,
                               bars: [.memory32(0, start: 0xdf20_0000, size: 128 << 10)],
                               faults: [.replaceAttribute("resource", contents: nonHex)])
        case .truncatedConfig:
            return pchFunction(0xa36f, classCode: 0x050000, driver: nil, group: 3,
                               bars: [.memory64(0, start: 0xdf24_c000, size: 8 << 10)], faults: [.truncatedConfig(byteCount: 10)])
        }
    }
}

/// The healthy devices every broken fixture keeps.
public enum BrokenHost {
    public static let hostBridge = FixtureAddress(bus: 0x00, device: 0x00)
    public static let rootPort = FixtureAddress(bus: 0x00, device: 0x01)
    public static let usbController = FixtureAddress(bus: 0x00, device: 0x14)
    public static let nvme = FixtureAddress(bus: 0x01, device: 0x00)
    public static let healthyAddresses = [hostBridge, rootPort, usbController, nvme]

    static var healthyDevices: [FixtureDevice] {
        [
            FixtureDevice(
                address: hostBridge, vendorID: 0x8086, deviceID: 0x3ec2, subsystemVendorID: 0x1043, subsystemDeviceID: 0x8694,
                classCode: 0x060000, revision: 0x07, driver: "skl_uncore", iommuGroup: 0
            ),
            FixtureDevice(
                address: rootPort, vendorID: 0x8086, deviceID: 0x1901, subsystemVendorID: 0x1043, subsystemDeviceID: 0x8694,
                classCode: 0x060400, revision: 0x07, driver: "pcieport", iommuGroup: 1, irq: 122,
                pcie: FixturePCIe(portType: .rootPort, link: .init(maxSpeed: .gen3, maxWidth: 4)),
                acs: .enabled, secondaryBus: 0x01
            ),
            FixtureDevice(
                address: usbController, vendorID: 0x8086, deviceID: 0xa36d, subsystemVendorID: 0x1043, subsystemDeviceID: 0x8694,
                classCode: 0x0c0330, revision: 0x10, driver: "xhci_hcd", iommuGroup: 3,
                bars: [.memory64(0, start: 0xdf23_0000, size: 64 << 10)], resetMethods: ["pm"], irq: 124
            ),
            FixtureDevice(
                address: nvme, vendorID: 0x144d, deviceID: 0xa80a, subsystemVendorID: 0x144d, subsystemDeviceID: 0xa801,
                classCode: 0x010802, revision: 0x00, driver: "nvme", iommuGroup: 2,
                bars: [.memory64(0, start: 0xdf40_0000, size: 16 << 10)], resetMethods: ["flr", "bus"], irq: 16,
                pcie: FixturePCIe(portType: .endpoint, link: .init(maxSpeed: .gen4, maxWidth: 4, currentSpeed: .gen3))
            ),
        ]
    }
}

extension FixtureHost {
    /// Healthy devices (`BrokenHost.healthyAddresses`) plus one device per `BrokenDeviceCase`.
    public static var broken: FixtureHost {
        FixtureHost(iommu: .intel, devices: BrokenHost.healthyDevices + BrokenDeviceCase.allCases.map(\.device))
    }

    /// Healthy devices plus exactly one broken device.
    public static func broken(_ brokenCase: BrokenDeviceCase) -> FixtureHost {
        FixtureHost(iommu: .intel, devices: BrokenHost.healthyDevices + [brokenCase.device])
    }
}
