/// Which IOMMU the fixture host has; decides the `class/iommu/<unit>` entry name.
public enum IOMMUKind: String, Sendable, Hashable, CaseIterable {
    /// Intel VT-d: the unit appears as `class/iommu/dmar0` (a virtual device).
    case intel
    /// AMD-Vi: the unit appears as `class/iommu/ivhd0`.
    case amd

    var unitName: String {
        switch self {
        case .intel: "dmar0"
        case .amd: "ivhd0"
        }
    }
}

/// The default DMA domain type the kernel reports in `kernel/iommu_groups/<n>/type`.
public enum IOMMUDomainType: String, Sendable, Hashable, CaseIterable {
    case dma = "DMA"
    /// Lazy (flush-queue) translation, the x86 default on recent kernels.
    case dmaFQ = "DMA-FQ"
    case identity
}

/// A whole machine: what `FixtureBuilder` turns into a sysfs tree.
public struct FixtureHost: Sendable, Hashable {
    /// nil: no IOMMU, so no groups and no `class/iommu` entries.
    public var iommu: IOMMUKind?
    public var iommuDomainType: IOMMUDomainType
    /// Online CPUs; drives `local_cpulist` / `local_cpus`.
    public var cpuCount: Int
    /// NUMA nodes; CPUs are split evenly and contiguously between them.
    public var numaNodeCount: Int
    public var devices: [FixtureDevice]
    /// Drivers registered on the PCI bus with no device bound (e.g. vfio-pci loaded but unused).
    public var extraDrivers: [String]

    public init(
        iommu: IOMMUKind?,
        iommuDomainType: IOMMUDomainType = .dmaFQ,
        cpuCount: Int = 8,
        numaNodeCount: Int = 1,
        devices: [FixtureDevice],
        extraDrivers: [String] = []
    ) {
        self.iommu = iommu
        self.iommuDomainType = iommuDomainType
        self.cpuCount = cpuCount
        self.numaNodeCount = numaNodeCount
        self.devices = devices
        self.extraDrivers = extraDrivers
    }

    public func device(at address: FixtureAddress) -> FixtureDevice? {
        devices.first { $0.address == address }
    }

    /// Members of each IOMMU group as written to `kernel/iommu_groups`, sorted by address
    /// (devices with dangling group links excluded; empty without an IOMMU).
    public var iommuGroups: [Int: [FixtureAddress]] {
        guard iommu != nil else { return [:] }
        var groups: [Int: [FixtureAddress]] = [:]
        for device in devices {
            guard let group = device.iommuGroup, !device.hasDanglingIOMMUGroupLink else { continue }
            groups[group, default: []].append(device.address)
        }
        return groups.mapValues { $0.sorted() }
    }

    /// Names of every driver directory under `bus/pci/drivers`.
    public var registeredDrivers: [String] {
        var names = Set(extraDrivers)
        for device in devices where !device.hasDanglingDriverLink {
            if let driver = device.driver { names.insert(driver) }
        }
        return names.sorted()
    }

    /// The upstream bridge of `address`, or nil when it sits on a root bus.
    /// Inferred as the kernel does: a VF hangs where its PF hangs; other devices
    /// hang below the bridge whose secondary bus is their bus.
    public func parent(of address: FixtureAddress) -> FixtureAddress? {
        (try? FixtureTopology(host: self))?.parents[address] ?? nil
    }

    /// Addresses of the VFs a PF has enabled (`sriov_numvfs` of them).
    public func virtualFunctions(of physicalFunction: FixtureAddress) -> [FixtureAddress] {
        guard let sriov = device(at: physicalFunction)?.sriov else { return [] }
        return sriov.virtualFunctionAddresses(physicalFunction: physicalFunction)
    }
}

/// One PCI function and everything sysfs shows about it.
public struct FixtureDevice: Sendable, Hashable {
    public var address: FixtureAddress
    public var vendorID: UInt16
    public var deviceID: UInt16
    public var subsystemVendorID: UInt16
    public var subsystemDeviceID: UInt16
    /// 24-bit class code: base class, subclass, programming interface (0x030000 = VGA).
    public var classCode: UInt32
    public var revision: UInt8
    /// Bound driver name as in `bus/pci/drivers/<name>`; nil when unbound.
    public var driver: String?
    /// `driver_override` contents; nil prints "(null)".
    public var driverOverride: String?
    public var iommuGroup: Int?
    public var bars: [FixtureBAR]
    public var rom: FixtureROM?
    /// Kernel reset method names in order (`flr`, `af_flr`, `pm`, `bus`, ...). Empty: no `reset_method` file.
    public var resetMethods: [String]
    /// Only written for VGA-class devices (class 0x0300xx), as the kernel does.
    public var bootVGA: Bool
    /// -1 when the platform reports no NUMA affinity.
    public var numaNode: Int
    public var irq: Int
    /// nil: conventional PCI (256-byte config space, no PCI Express capability).
    public var pcie: FixturePCIe?
    /// Access Control Services extended capability (ports and multi-function devices).
    public var acs: FixtureACS?
    /// Non-nil makes this a type-1 header PCI-to-PCI bridge leading to that bus number.
    public var secondaryBus: UInt8?
    /// Present on SR-IOV physical functions.
    public var sriov: FixtureSRIOV?
    /// Deliberate damage applied after the healthy device is written.
    public var faults: [FixtureFault]
    /// BARs it can resize: a Resizable BAR capability (PCIe devices only) and `resourceN_resize`.
    public var resizableBARs: [FixtureResizableBAR] = []
    /// The VFIO device file the kernel made for it (`vfio-dev/vfioN`, with CONFIG_VFIO_DEVICE_CDEV
    /// on a device bound to vfio-pci); nil: none.
    public var vfioDeviceFile: String? = nil

    public init(
        address: FixtureAddress,
        vendorID: UInt16,
        deviceID: UInt16,
        subsystemVendorID: UInt16 = 0,
        subsystemDeviceID: UInt16 = 0,
        classCode: UInt32,
        revision: UInt8 = 0,
        driver: String? = nil,
        driverOverride: String? = nil,
        iommuGroup: Int? = nil,
        bars: [FixtureBAR] = [],
        rom: FixtureROM? = nil,
        resetMethods: [String] = [],
        bootVGA: Bool = false,
        numaNode: Int = -1,
        irq: Int = 0,
        pcie: FixturePCIe? = nil,
        acs: FixtureACS? = nil,
        secondaryBus: UInt8? = nil,
        sriov: FixtureSRIOV? = nil,
        faults: [FixtureFault] = []
    ) {
        self.address = address
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.subsystemVendorID = subsystemVendorID
        self.subsystemDeviceID = subsystemDeviceID
        self.classCode = classCode
        self.revision = revision
        self.driver = driver
        self.driverOverride = driverOverride
        self.iommuGroup = iommuGroup
        self.bars = bars
        self.rom = rom
        self.resetMethods = resetMethods
        self.bootVGA = bootVGA
        self.numaNode = numaNode
        self.irq = irq
        self.pcie = pcie
        self.acs = acs
        self.secondaryBus = secondaryBus
        self.sriov = sriov
        self.faults = faults
    }

    public var isBridge: Bool { secondaryBus != nil }
    /// VGA-compatible display controller: the only class with a `boot_vga` attribute.
    public var isVGA: Bool { classCode >> 8 == 0x0300 }

    var hasDanglingDriverLink: Bool {
        faults.contains { if case .danglingDriverLink = $0 { true } else { false } }
    }

    var hasDanglingIOMMUGroupLink: Bool {
        faults.contains { if case .danglingIOMMUGroupLink = $0 { true } else { false } }
    }
}

/// A base address register and the resource the kernel assigned to it.
public struct FixtureBAR: Sendable, Hashable {
    public enum Space: Sendable, Hashable {
        case io
        case memory
    }

    /// BAR number 0...5; a 64-bit BAR also consumes `index + 1`.
    public var index: Int
    public var start: UInt64
    /// Size in bytes; a power of two.
    public var size: UInt64
    public var space: Space
    public var is64Bit: Bool
    public var isPrefetchable: Bool

    public init(index: Int, start: UInt64, size: UInt64, space: Space = .memory, is64Bit: Bool = false, isPrefetchable: Bool = false) {
        self.index = index
        self.start = start
        self.size = size
        self.space = space
        self.is64Bit = space == .memory && is64Bit
        self.isPrefetchable = space == .memory && isPrefetchable
    }

    public static func io(_ index: Int, start: UInt64, size: UInt64) -> FixtureBAR {
        FixtureBAR(index: index, start: start, size: size, space: .io)
    }

    public static func memory32(_ index: Int, start: UInt64, size: UInt64, prefetchable: Bool = false) -> FixtureBAR {
        FixtureBAR(index: index, start: start, size: size, space: .memory, is64Bit: false, isPrefetchable: prefetchable)
    }

    public static func memory64(_ index: Int, start: UInt64, size: UInt64, prefetchable: Bool = false) -> FixtureBAR {
        FixtureBAR(index: index, start: start, size: size, space: .memory, is64Bit: true, isPrefetchable: prefetchable)
    }

    public var end: UInt64 { start + size - 1 }
}

/// Expansion ROM BAR (resource line 6).
public struct FixtureROM: Sendable, Hashable {
    public var start: UInt64
    public var size: UInt64
    public var isEnabled: Bool

    public init(start: UInt64, size: UInt64, isEnabled: Bool = false) {
        self.start = start
        self.size = size
        self.isEnabled = isEnabled
    }
}

/// The PCI Express capability: port type and link.
public struct FixturePCIe: Sendable, Hashable {
    /// Device/Port Type field of the PCI Express Capabilities register.
    public enum PortType: UInt8, Sendable, Hashable, CaseIterable {
        case endpoint = 0x0
        case legacyEndpoint = 0x1
        case rootPort = 0x4
        case upstreamSwitchPort = 0x5
        case downstreamSwitchPort = 0x6
        case pcieToPCIBridge = 0x7
        case pciToPCIeBridge = 0x8
        case rootComplexIntegratedEndpoint = 0x9
        case rootComplexEventCollector = 0xa

        /// Ports that face a link towards downstream devices (have a slot, report link-active).
        var isDownstreamFacing: Bool { self == .rootPort || self == .downstreamSwitchPort }
    }

    /// Link speed generation, as encoded in Link Capabilities / Status.
    public enum LinkSpeed: UInt8, Sendable, Hashable, CaseIterable {
        case gen1 = 1, gen2, gen3, gen4, gen5, gen6

        /// The kernel's `pci_speed_string` spelling used by `current_link_speed`.
        public var sysfsText: String {
            switch self {
            case .gen1: "2.5 GT/s PCIe"
            case .gen2: "5.0 GT/s PCIe"
            case .gen3: "8.0 GT/s PCIe"
            case .gen4: "16.0 GT/s PCIe"
            case .gen5: "32.0 GT/s PCIe"
            case .gen6: "64.0 GT/s PCIe"
            }
        }
    }

    /// A trained (or trainable) link; nil for integrated endpoints and VFs, whose link registers are zero.
    public struct Link: Sendable, Hashable {
        public var maxSpeed: LinkSpeed
        public var maxWidth: Int
        public var currentSpeed: LinkSpeed
        public var currentWidth: Int

        public init(maxSpeed: LinkSpeed, maxWidth: Int, currentSpeed: LinkSpeed? = nil, currentWidth: Int? = nil) {
            self.maxSpeed = maxSpeed
            self.maxWidth = maxWidth
            self.currentSpeed = currentSpeed ?? maxSpeed
            self.currentWidth = currentWidth ?? maxWidth
        }
    }

    public var portType: PortType
    public var link: Link?
    /// Physical slot number for root / downstream ports that implement a slot.
    public var slotNumber: Int?

    public init(portType: PortType, link: Link? = nil, slotNumber: Int? = nil) {
        self.portType = portType
        self.link = link
        self.slotNumber = slotNumber
    }
}

/// Access Control Services extended capability (ID 0x000D).
public struct FixtureACS: Sendable, Hashable {
    /// Bits shared by the ACS Capability and ACS Control registers.
    public struct Flags: OptionSet, Sendable, Hashable {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }

        public static let sourceValidation = Flags(rawValue: 1 << 0)
        public static let translationBlocking = Flags(rawValue: 1 << 1)
        public static let requestRedirect = Flags(rawValue: 1 << 2)
        public static let completionRedirect = Flags(rawValue: 1 << 3)
        public static let upstreamForwarding = Flags(rawValue: 1 << 4)
        public static let egressControl = Flags(rawValue: 1 << 5)
        public static let directTranslatedP2P = Flags(rawValue: 1 << 6)

        /// What Linux requires for isolation (`REQ_ACS_FLAGS`): SV | RR | CR | UF.
        public static let linuxIsolation: Flags = [.sourceValidation, .requestRedirect, .completionRedirect, .upstreamForwarding]
    }

    public var capabilities: Flags
    public var control: Flags

    public init(capabilities: Flags, control: Flags) {
        self.capabilities = capabilities
        self.control = control
    }

    /// A typical root/downstream port with ACS implemented and enabled by the kernel.
    public static let enabled = FixtureACS(
        capabilities: [.sourceValidation, .translationBlocking, .requestRedirect, .completionRedirect, .upstreamForwarding],
        control: .linuxIsolation
    )

    /// ACS implemented but left disabled (e.g. by firmware or `pci=noacs`-style settings).
    public static let disabled = FixtureACS(
        capabilities: [.sourceValidation, .translationBlocking, .requestRedirect, .completionRedirect, .upstreamForwarding],
        control: []
    )
}

/// SR-IOV extended capability of a physical function.
public struct FixtureSRIOV: Sendable, Hashable {
    public var totalVFs: Int
    /// Enabled VFs (`sriov_numvfs`); each must exist in the host's devices.
    public var numVFs: Int
    /// Routing-ID offset of VF 0 from the PF, and the distance between VFs (as in the capability).
    public var firstVFOffset: Int
    public var vfStride: Int
    public var vfDeviceID: UInt16
    /// Per-VF BARs: `start` is VF 0's address, `size` one VF's size; VF n sits at `start + n * size`.
    public var vfBARs: [FixtureBAR]
    public var driversAutoprobe: Bool

    public init(
        totalVFs: Int,
        numVFs: Int,
        firstVFOffset: Int,
        vfStride: Int = 1,
        vfDeviceID: UInt16,
        vfBARs: [FixtureBAR],
        driversAutoprobe: Bool = true
    ) {
        self.totalVFs = totalVFs
        self.numVFs = numVFs
        self.firstVFOffset = firstVFOffset
        self.vfStride = vfStride
        self.vfDeviceID = vfDeviceID
        self.vfBARs = vfBARs
        self.driversAutoprobe = driversAutoprobe
    }

    /// VF addresses as the kernel computes them (`pci_iov_virtfn_bus/devfn`): PF routing ID + offset + n * stride.
    public func virtualFunctionAddresses(physicalFunction: FixtureAddress) -> [FixtureAddress] {
        (0..<numVFs).compactMap { virtualFunctionAddress(physicalFunction: physicalFunction, index: $0) }
    }

    public func virtualFunctionAddress(physicalFunction: FixtureAddress, index: Int) -> FixtureAddress? {
        let routingID = Int(physicalFunction.routingID) + firstVFOffset + index * vfStride
        guard routingID <= Int(UInt16.max) else { return nil }
        return FixtureAddress(domain: physicalFunction.domain, routingID: UInt16(routingID))
    }
}

/// Damage a fixture device on purpose, to test how readers cope with broken trees.
public enum FixtureFault: Sendable, Hashable {
    /// Remove an attribute file (e.g. "vendor", "class", "resource") after writing it.
    case missingAttribute(String)
    /// Replace an attribute file's contents with these bytes (garbage, wrong format).
    case replaceAttribute(String, contents: String)
    /// Cut `config` down to this many bytes.
    case truncatedConfig(byteCount: Int)
    /// Point `driver` at `bus/pci/drivers/<name>`, a driver directory that does not exist.
    case danglingDriverLink(driverName: String)
    /// Point `iommu_group` at `kernel/iommu_groups/<group>`, a group directory that does not exist.
    case danglingIOMMUGroupLink(group: Int)
}

extension FixtureDevice {
    /// Builds the VF devices of an SR-IOV PF, consistent with its SR-IOV capability:
    /// addresses from offset/stride, IDs from the PF and `vfDeviceID`, BARs carved from the VF BAR ranges.
    /// `configure` sets per-VF details (driver, IOMMU group, ...) given the VF index.
    public static func virtualFunctions(
        of physicalFunction: FixtureDevice,
        subsystemDeviceID: UInt16 = 0,
        configure: (_ index: Int, _ virtualFunction: inout FixtureDevice) -> Void = { _, _ in }
    ) -> [FixtureDevice] {
        guard let sriov = physicalFunction.sriov else { return [] }
        return (0..<sriov.numVFs).compactMap { index in
            guard let address = sriov.virtualFunctionAddress(physicalFunction: physicalFunction.address, index: index) else {
                return nil
            }
            var virtualFunction = FixtureDevice(
                address: address,
                vendorID: physicalFunction.vendorID,
                deviceID: sriov.vfDeviceID,
                subsystemVendorID: physicalFunction.subsystemVendorID,
                subsystemDeviceID: subsystemDeviceID,
                classCode: physicalFunction.classCode,
                revision: physicalFunction.revision,
                bars: sriov.vfBARs.map { bar in
                    var shifted = bar
                    shifted.start = bar.start + UInt64(index) * bar.size
                    return shifted
                },
                resetMethods: ["flr"],
                numaNode: physicalFunction.numaNode,
                pcie: FixturePCIe(portType: .endpoint)
            )
            configure(index, &virtualFunction)
            return virtualFunction
        }
    }
}
