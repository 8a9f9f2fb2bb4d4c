/// Shape of `FixtureHost.largeSRIOVHost(deviceCount:)`: a Skylake-SP server full of E810 VFs.
///
/// - `0000:00:00.0` host bridge (8086:2020), on root bus 00.
/// - Root buses `pci0000:10`, `pci0000:20`, ... (one per CPU PCIe stack), each with up to four
///   root ports (8086:2030-2033, ACS enabled, `pcieport`) at `BB:00.0`-`BB:03.0`.
/// - Behind each root port one E810-C PF (8086:1592, `ice`) at `(BB+1+n):00.0` with its VFs
///   (8086:1889) on the same bus from routing-ID offset 8 (ARI), at most 248 per PF.
/// - Every function is its own IOMMU group, numbered in address order from 0.
/// - VF drivers cycle `iavf`, `vfio-pci`, `vfio-pci`, unbound (VF index mod 4).
/// - Beyond 15 stacks the layout continues in PCI domain 0001, 0002, ...
public enum LargeSRIOVHost {
    public static let physicalFunctionDeviceID: UInt16 = 0x1592
    public static let virtualFunctionDeviceID: UInt16 = 0x1889
    /// VF 0 sits 8 routing IDs after the PF so 248 VFs fill the rest of the PF's bus.
    public static let firstVFOffset = 8
    public static let maxVirtualFunctionsPerPhysicalFunction = 256 - firstVFOffset
    public static let rootPortsPerStack = 4
    /// Eight PFs unless more are needed to stay within 248 VFs each.
    public static let minimumPhysicalFunctionCount = 8

    /// How many PFs a host of `deviceCount` functions gets (1 host bridge + a root port and PF per PF + VFs).
    public static func physicalFunctionCount(deviceCount: Int) -> Int {
        let available = max(deviceCount - 1, 0)
        var count = min(minimumPhysicalFunctionCount, available / 2)
        while count > 0, available - 2 * count > count * maxVirtualFunctionsPerPhysicalFunction {
            count += 1
        }
        return count
    }
}

extension FixtureHost {
    /// A server with exactly `deviceCount` PCI functions (host bridge, root ports, PFs, VFs).
    /// With the default 2,000: 8 root ports, 8 PFs, 1,983 VFs (247 or 248 per PF).
    public static func largeSRIOVHost(deviceCount: Int = 2000) -> FixtureHost {
        let intel: UInt16 = 0x8086
        let physicalFunctionCount = LargeSRIOVHost.physicalFunctionCount(deviceCount: deviceCount)
        let virtualFunctionCount = max(deviceCount - 1 - 2 * physicalFunctionCount, 0)
        let stackCount = (physicalFunctionCount + LargeSRIOVHost.rootPortsPerStack - 1) / LargeSRIOVHost.rootPortsPerStack
        let stacksPerDomain = 15

        var devices: [FixtureDevice] = []
        devices.reserveCapacity(max(deviceCount, 1))
        if deviceCount > 0 {
            devices.append(FixtureDevice(
                address: FixtureAddress(bus: 0, device: 0), vendorID: intel, deviceID: 0x2020,
                subsystemVendorID: 0x15d9, subsystemDeviceID: 0x095d,
                classCode: 0x060000, revision: 0x04, numaNode: 0
            ))
        }

        for physicalFunctionIndex in 0..<physicalFunctionCount {
            let stack = physicalFunctionIndex / LargeSRIOVHost.rootPortsPerStack
            let portInStack = physicalFunctionIndex % LargeSRIOVHost.rootPortsPerStack
            let domain = UInt32(stack / stacksPerDomain)
            let stackBus = UInt8(0x10 * (stack % stacksPerDomain + 1))
            let endpointBus = stackBus + 1 + UInt8(portInStack)
            let numaNode = stackCount > 1 && stack >= (stackCount + 1) / 2 ? 1 : 0
            let vfCount = virtualFunctionCount / physicalFunctionCount
                + (physicalFunctionIndex < virtualFunctionCount % physicalFunctionCount ? 1 : 0)

            devices.append(FixtureDevice(
                address: FixtureAddress(domain: domain, bus: stackBus, device: UInt8(portInStack)),
                vendorID: intel, deviceID: 0x2030 + UInt16(portInStack),
                subsystemVendorID: 0x15d9, subsystemDeviceID: 0x095d,
                classCode: 0x060400, revision: 0x04, driver: "pcieport",
                numaNode: numaNode, irq: 24 + physicalFunctionIndex,
                pcie: FixturePCIe(portType: .rootPort, link: .init(maxSpeed: .gen3, maxWidth: 16), slotNumber: 1 + physicalFunctionIndex),
                acs: .enabled,
                secondaryBus: endpointBus
            ))

            // Each PF gets its own 4 GiB of 64-bit space above 128 GiB.
            let base = 0x20_0000_0000 + UInt64(physicalFunctionIndex) << 32
            var physicalFunction = FixtureDevice(
                address: FixtureAddress(domain: domain, bus: endpointBus, device: 0),
                vendorID: intel, deviceID: LargeSRIOVHost.physicalFunctionDeviceID,
                subsystemVendorID: intel, subsystemDeviceID: 0x0002,
                classCode: 0x020000, revision: 0x02, driver: "ice",
                bars: [
                    .memory64(0, start: base, size: 32 << 20, prefetchable: true),
                    .memory64(3, start: base + 0x200_0000, size: 64 << 10, prefetchable: true),
                ],
                rom: nil,
                resetMethods: vfCount > 0 ? ["flr"] : ["flr", "bus"],
                numaNode: numaNode, irq: 32 + physicalFunctionIndex,
                pcie: FixturePCIe(portType: .endpoint, link: .init(maxSpeed: .gen4, maxWidth: 16, currentSpeed: .gen3))
            )
            physicalFunction.sriov = FixtureSRIOV(
                totalVFs: 256, numVFs: vfCount, firstVFOffset: LargeSRIOVHost.firstVFOffset, vfStride: 1,
                vfDeviceID: LargeSRIOVHost.virtualFunctionDeviceID,
                vfBARs: [
                    .memory64(0, start: base + 0x400_0000, size: 128 << 10, prefetchable: true),
                    .memory64(3, start: base + 0x600_0000, size: 16 << 10, prefetchable: true),
                ]
            )
            devices.append(physicalFunction)
            devices += FixtureDevice.virtualFunctions(of: physicalFunction) { index, virtualFunction in
                switch index % 4 {
                case 0: virtualFunction.driver = "iavf"
                case 1, 2: virtualFunction.driver = "vfio-pci"
                default: virtualFunction.driver = nil
                }
            }
        }

        // Full ACS everywhere: every function is alone in its group, numbered in address order.
        devices.sort { $0.address < $1.address }
        for index in devices.indices { devices[index].iommuGroup = index }

        return FixtureHost(
            iommu: .intel, iommuDomainType: .dmaFQ,
            cpuCount: 64, numaNodeCount: stackCount > 1 ? 2 : 1,
            devices: devices
        )
    }
}
