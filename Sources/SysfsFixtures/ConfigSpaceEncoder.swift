import CLinuxUAPI
import TextFormat
/// Little-endian configuration space image, as the `config` attribute returns it.
struct ConfigSpace {
    private(set) var bytes: [UInt8]

    init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }

    mutating func set8(_ offset: Int, _ value: UInt8) { bytes[offset] = value }

    mutating func set16(_ offset: Int, _ value: UInt16) {
        bytes[offset] = UInt8(truncatingIfNeeded: value)
        bytes[offset + 1] = UInt8(truncatingIfNeeded: value >> 8)
    }

    mutating func set32(_ offset: Int, _ value: UInt32) {
        set16(offset, UInt16(truncatingIfNeeded: value))
        set16(offset + 2, UInt16(truncatingIfNeeded: value >> 16))
    }
}

/// Register offsets and IDs from `<linux/pci_regs.h>`.
enum PCIRegister {
    static let command = Int(PCI_COMMAND), status = Int(PCI_STATUS), revision = Int(PCI_REVISION_ID), classCode = Int(PCI_CLASS_PROG)
    static let cacheLineSize = Int(PCI_CACHE_LINE_SIZE), headerType = Int(PCI_HEADER_TYPE), bar0 = Int(PCI_BASE_ADDRESS_0)
    static let subsystemVendor = Int(PCI_SUBSYSTEM_VENDOR_ID), subsystemDevice = Int(PCI_SUBSYSTEM_ID), romType0 = Int(PCI_ROM_ADDRESS)
    static let capabilityPointer = Int(PCI_CAPABILITY_LIST), interruptLine = Int(PCI_INTERRUPT_LINE), interruptPin = Int(PCI_INTERRUPT_PIN)
    // Type 1 (bridge) header.
    static let primaryBus = Int(PCI_PRIMARY_BUS), secondaryBus = Int(PCI_SECONDARY_BUS), subordinateBus = Int(PCI_SUBORDINATE_BUS)
    static let ioBase = Int(PCI_IO_BASE), ioLimit = Int(PCI_IO_LIMIT), memoryBase = Int(PCI_MEMORY_BASE), memoryLimit = Int(PCI_MEMORY_LIMIT)
    static let prefetchableBase = Int(PCI_PREF_MEMORY_BASE), prefetchableLimit = Int(PCI_PREF_MEMORY_LIMIT)
    static let prefetchableBaseUpper = Int(PCI_PREF_BASE_UPPER32), prefetchableLimitUpper = Int(PCI_PREF_LIMIT_UPPER32)
    static let romType1 = Int(PCI_ROM_ADDRESS1), bridgeControl = Int(PCI_BRIDGE_CONTROL)

    static let statusCapabilityList = UInt16(PCI_STATUS_CAP_LIST)
    static let firstExtendedCapability = Int(PCI_CFG_SPACE_SIZE)
}

enum CapabilityID {
    static let powerManagement = UInt8(PCI_CAP_ID_PM)
    static let msi = UInt8(PCI_CAP_ID_MSI)
    static let bridgeSubsystemVendor = UInt8(PCI_CAP_ID_SSVID)
    static let pciExpress = UInt8(PCI_CAP_ID_EXP)
    static let msix = UInt8(PCI_CAP_ID_MSIX)
}

enum ExtendedCapabilityID {
    static let advancedErrorReporting = UInt16(PCI_EXT_CAP_ID_ERR)
    static let accessControlServices = UInt16(PCI_EXT_CAP_ID_ACS)
    static let resizableBAR = UInt16(PCI_EXT_CAP_ID_REBAR)
    static let alternativeRoutingID = UInt16(PCI_EXT_CAP_ID_ARI)
    static let singleRootIOV = UInt16(PCI_EXT_CAP_ID_SRIOV)
}

/// The kernel's `IORESOURCE_*` flag bits as printed in the `resource` attribute.
enum IOResourceFlag {
    static let io: UInt64 = 0x0000_0100
    static let memory: UInt64 = 0x0000_0200
    static let prefetch: UInt64 = 0x0000_2000
    static let readOnly: UInt64 = 0x0000_4000
    static let sizeAlign: UInt64 = 0x0004_0000
    static let memory64: UInt64 = 0x0010_0000
    static let romEnable: UInt64 = 0x0000_0001
}

extension FixtureBAR {
    /// The low type bits of the BAR register (I/O space bit, or memory type and prefetchable bits).
    var registerTypeBits: UInt32 {
        switch space {
        case .io: 0x1
        case .memory: (is64Bit ? 0x4 : 0) | (isPrefetchable ? 0x8 : 0)
        }
    }

    /// Flags exactly as `resource` prints them: IORESOURCE_* plus the BAR's own type bits.
    var resourceFlags: UInt64 {
        switch space {
        case .io:
            return IOResourceFlag.io | IOResourceFlag.sizeAlign | UInt64(registerTypeBits)
        case .memory:
            var flags = IOResourceFlag.memory | IOResourceFlag.sizeAlign | UInt64(registerTypeBits)
            if isPrefetchable { flags |= IOResourceFlag.prefetch }
            if is64Bit { flags |= IOResourceFlag.memory64 }
            return flags
        }
    }
}

extension FixtureROM {
    var resourceFlags: UInt64 {
        IOResourceFlag.memory | IOResourceFlag.prefetch | IOResourceFlag.readOnly | IOResourceFlag.sizeAlign
            | (isEnabled ? IOResourceFlag.romEnable : 0)
    }
}

/// Encodes the `config` and `resource` attributes of one device so they agree with each other.
struct DeviceEncoder {
    let device: FixtureDevice
    let topology: FixtureTopology

    var isVirtualFunction: Bool { topology.isVirtualFunction(device.address) }
    /// Host bridges (class 0x0600) carry no interrupt or power-management capability.
    var isHostBridge: Bool { device.classCode >> 8 == 0x0600 }
    var bindsEnablingDriver: Bool {
        guard let driver = device.driver, !device.hasDanglingDriverLink else { return false }
        // vfio-pci and pci-stub leave the device disabled until a user opens it.
        return driver != "vfio-pci" && driver != "pci-stub"
    }

    // MARK: resource

    /// 13 lines for endpoints (6 BARs, ROM, 6 IOV BARs); 17 for bridges (plus 4 window lines).
    func resourceFile() -> String {
        var lines = [(start: UInt64, end: UInt64, flags: UInt64)](repeating: (0, 0, 0), count: device.isBridge ? 17 : 13)
        for bar in device.bars where bar.index >= 0 && bar.index < 6 {
            lines[bar.index] = (bar.start, bar.end, bar.resourceFlags)
        }
        if let rom = device.rom {
            lines[6] = (rom.start, rom.start + rom.size - 1, rom.resourceFlags)
        }
        if let sriov = device.sriov {
            // The kernel sizes each IOV resource for TotalVFs, not NumVFs.
            for bar in sriov.vfBARs where bar.index >= 0 && bar.index < 6 {
                lines[7 + bar.index] = (bar.start, bar.start + bar.size * UInt64(sriov.totalVFs) - 1, bar.resourceFlags)
            }
        }
        if device.isBridge, let windows = topology.bridgeWindows[device.address] {
            if let io = windows.io?.aligned(to: 0x1000) {
                lines[13] = (io.low, io.high, IOResourceFlag.io)  // 16-bit I/O decode, like Intel ports
            }
            if let memory = windows.memory?.aligned(to: 0x10_0000) {
                lines[14] = (memory.low, memory.high, IOResourceFlag.memory)
            }
            if let prefetchable = windows.prefetchable?.aligned(to: 0x10_0000) {
                let typeBits: UInt64 = windows.prefetchableIs64Bit ? 0x1 | IOResourceFlag.memory64 : 0
                lines[15] = (prefetchable.low, prefetchable.high, IOResourceFlag.memory | IOResourceFlag.prefetch | typeBits)
            }
        }
        var text = ""
        text.reserveCapacity(lines.count * 57)
        for line in lines {
            text += line.start.hex(digits: 16) + " 0x" + line.end.hexDigits(16) + " 0x" + line.flags.hexDigits(16) + "\n"
        }
        return text
    }

    // MARK: config

    func configSpace() -> [UInt8] {
        var config = ConfigSpace(size: device.pcie == nil ? 256 : 4096)
        // VFs read all-ones IDs in config space; the kernel takes their IDs from the PF's SR-IOV capability.
        config.set16(0x00, isVirtualFunction ? 0xffff : device.vendorID)
        config.set16(0x02, isVirtualFunction ? 0xffff : device.deviceID)
        config.set8(PCIRegister.revision, device.revision)
        config.set8(PCIRegister.classCode, UInt8(truncatingIfNeeded: device.classCode))
        config.set8(PCIRegister.classCode + 1, UInt8(truncatingIfNeeded: device.classCode >> 8))
        config.set8(PCIRegister.classCode + 2, UInt8(truncatingIfNeeded: device.classCode >> 16))
        config.set8(PCIRegister.cacheLineSize, isVirtualFunction ? 0 : 0x10)
        let multiFunctionBit: UInt8 = topology.isMultiFunction(device.address) ? 0x80 : 0
        config.set8(PCIRegister.headerType, (device.isBridge ? 0x01 : 0x00) | multiFunctionBit)

        let capabilities = standardCapabilities()
        let usesMSI = capabilities.contains { $0.id == CapabilityID.msi } && bindsEnablingDriver
        config.set16(PCIRegister.command, commandRegister(usesMSI: usesMSI))
        config.set16(PCIRegister.status, capabilities.isEmpty ? 0 : PCIRegister.statusCapabilityList)

        if !isVirtualFunction {
            // VF BARs read as zero; their addresses come from the PF's VF BAR registers.
            writeBARs(into: &config, limit: device.isBridge ? 2 : 6)
        }
        if device.isBridge {
            writeBridgeHeader(into: &config)
        } else {
            config.set16(PCIRegister.subsystemVendor, device.subsystemVendorID)
            config.set16(PCIRegister.subsystemDevice, device.subsystemDeviceID)
            if let rom = device.rom { config.set32(PCIRegister.romType0, UInt32(truncatingIfNeeded: rom.start) | (rom.isEnabled ? 1 : 0)) }
        }
        let hasInterruptPin = !isVirtualFunction && !isHostBridge
        config.set8(PCIRegister.interruptLine, hasInterruptPin ? UInt8(clamping: device.irq) : 0)
        config.set8(PCIRegister.interruptPin, hasInterruptPin ? 1 : 0)

        writeStandardCapabilities(capabilities, usesMSI: usesMSI, into: &config)
        if device.pcie != nil { writeExtendedCapabilities(into: &config) }
        return config.bytes
    }

    private func commandRegister(usesMSI: Bool) -> UInt16 {
        guard !isVirtualFunction else { return 0 }
        let windows = topology.bridgeWindows[device.address]
        let decodesIO = device.bars.contains { $0.space == .io } || windows?.io != nil
        var command: UInt16 = 0x0002  // firmware enables memory decoding for every function
        if decodesIO { command |= 0x0001 }
        if bindsEnablingDriver || device.isBridge || isHostBridge { command |= 0x0004 }  // bus master
        if usesMSI { command |= 0x0400 }  // INTx disabled once MSI is on
        return command
    }

    private func writeBARs(into config: inout ConfigSpace, limit: Int) {
        for bar in device.bars where bar.index >= 0 && bar.index < limit {
            let offset = PCIRegister.bar0 + 4 * bar.index
            config.set32(offset, UInt32(truncatingIfNeeded: bar.start) | bar.registerTypeBits)
            if bar.is64Bit && bar.index + 1 < limit {
                config.set32(offset + 4, UInt32(truncatingIfNeeded: bar.start >> 32))
            }
        }
    }

    private func writeBridgeHeader(into config: inout ConfigSpace) {
        let secondary = device.secondaryBus ?? 0
        let windows = topology.bridgeWindows[device.address]
        config.set8(PCIRegister.primaryBus, device.address.bus)
        config.set8(PCIRegister.secondaryBus, secondary)
        config.set8(PCIRegister.subordinateBus, windows?.highestBus ?? secondary)

        if let io = windows?.io?.aligned(to: 0x1000) {
            config.set8(PCIRegister.ioBase, UInt8(truncatingIfNeeded: (io.low >> 8) & 0xf0))
            config.set8(PCIRegister.ioLimit, UInt8(truncatingIfNeeded: (io.high >> 8) & 0xf0))
        } else {
            // Base above limit: the window is closed.
            config.set8(PCIRegister.ioBase, 0xf0)
            config.set8(PCIRegister.ioLimit, 0x00)
        }
        if let memory = windows?.memory?.aligned(to: 0x10_0000) {
            config.set16(PCIRegister.memoryBase, UInt16(truncatingIfNeeded: memory.low >> 16) & 0xfff0)
            config.set16(PCIRegister.memoryLimit, UInt16(truncatingIfNeeded: memory.high >> 16) & 0xfff0)
        } else {
            config.set16(PCIRegister.memoryBase, 0xfff0)
            config.set16(PCIRegister.memoryLimit, 0x0000)
        }
        if let prefetchable = windows?.prefetchable?.aligned(to: 0x10_0000) {
            config.set16(PCIRegister.prefetchableBase, UInt16(truncatingIfNeeded: prefetchable.low >> 16) & 0xfff0 | 0x1)
            config.set16(PCIRegister.prefetchableLimit, UInt16(truncatingIfNeeded: prefetchable.high >> 16) & 0xfff0 | 0x1)
            config.set32(PCIRegister.prefetchableBaseUpper, UInt32(truncatingIfNeeded: prefetchable.low >> 32))
            config.set32(PCIRegister.prefetchableLimitUpper, UInt32(truncatingIfNeeded: prefetchable.high >> 32))
        } else {
            config.set16(PCIRegister.prefetchableBase, 0xfff1)
            config.set16(PCIRegister.prefetchableLimit, 0x0001)
        }
        if let rom = device.rom { config.set32(PCIRegister.romType1, UInt32(truncatingIfNeeded: rom.start) | (rom.isEnabled ? 1 : 0)) }
        config.set16(PCIRegister.bridgeControl, 0x0000)
    }

    // MARK: capabilities

    private struct Capability {
        var id: UInt8
        var length: Int
    }

    private func standardCapabilities() -> [Capability] {
        var list: [Capability] = []
        if !isVirtualFunction && !isHostBridge {
            list.append(Capability(id: CapabilityID.powerManagement, length: 0x08))
            list.append(Capability(id: CapabilityID.msi, length: 0x18))
        }
        if device.pcie != nil { list.append(Capability(id: CapabilityID.pciExpress, length: 0x3c)) }
        if isVirtualFunction { list.append(Capability(id: CapabilityID.msix, length: 0x0c)) }
        if device.isBridge { list.append(Capability(id: CapabilityID.bridgeSubsystemVendor, length: 0x08)) }
        return list
    }

    private func writeStandardCapabilities(_ capabilities: [Capability], usesMSI: Bool, into config: inout ConfigSpace) {
        var offsets: [Int] = []
        var next = 0x40
        for capability in capabilities {
            offsets.append(next)
            next = (next + capability.length + 0xf) & ~0xf
        }
        if let first = offsets.first { config.set8(PCIRegister.capabilityPointer, UInt8(first)) }
        for (position, capability) in capabilities.enumerated() {
            let offset = offsets[position]
            config.set8(offset, capability.id)
            config.set8(offset + 1, position + 1 < offsets.count ? UInt8(offsets[position + 1]) : 0)
            switch capability.id {
            case CapabilityID.powerManagement:
                config.set16(offset + 2, 0x0003)  // PM spec version 1.2
                // NoSoftRst+ means D3hot->D0 does not reset, so the kernel offers no "pm" reset.
                config.set16(offset + 4, device.resetMethods.contains("pm") ? 0x0000 : 0x0008)
            case CapabilityID.msi:
                config.set16(offset + 2, 0x0080 | (usesMSI ? 0x0001 : 0))  // 64-bit address capable
                if usesMSI {
                    config.set32(offset + 4, 0xfee0_0000)
                    config.set16(offset + 0x0c, UInt16(truncatingIfNeeded: 0x20 + device.irq))
                }
            case CapabilityID.pciExpress:
                writePCIExpressCapability(at: offset, into: &config)
            case CapabilityID.msix:
                // Table and PBA live in the VF's last BAR, as on Intel VFs.
                let tableBAR = UInt32(device.bars.map(\.index).max() ?? 0)
                config.set16(offset + 2, 0x0003 | (device.driver == nil ? 0 : 0x8000))  // 4 vectors
                config.set32(offset + 4, 0x0000 | tableBAR)
                config.set32(offset + 8, 0x2000 | tableBAR)
            case CapabilityID.bridgeSubsystemVendor:
                config.set16(offset + 4, device.subsystemVendorID)
                config.set16(offset + 6, device.subsystemDeviceID)
            default:
                break
            }
        }
    }

    private func writePCIExpressCapability(at offset: Int, into config: inout ConfigSpace) {
        guard let pcie = device.pcie else { return }
        let slotImplemented = pcie.portType.isDownstreamFacing && pcie.slotNumber != nil
        config.set16(offset + 0x02, 0x0002 | UInt16(pcie.portType.rawValue) << 4 | (slotImplemented ? 0x0100 : 0))

        var deviceCapabilities: UInt32 = 0x0000_8001  // role-based error reporting, 256-byte max payload
        if device.resetMethods.contains("flr") { deviceCapabilities |= 1 << 28 }
        config.set32(offset + 0x04, deviceCapabilities)
        config.set16(offset + 0x08, 0x2810)  // relaxed ordering, no snoop, 512-byte max read request

        let hasChildren = !(topology.childrenOf[device.address] ?? []).isEmpty
        if let link = pcie.link {
            var linkCapabilities = UInt32(link.maxSpeed.rawValue) | UInt32(link.maxWidth & 0x3f) << 4 | 0x2 << 10  // ASPM L1
            if pcie.portType.isDownstreamFacing {
                linkCapabilities |= 1 << 20  // data link layer link active reporting
                linkCapabilities |= UInt32(device.address.device) << 24  // port number
            }
            config.set32(offset + 0x0c, linkCapabilities)
            config.set16(offset + 0x10, 0x0040)  // common clock configuration
            var linkStatus = UInt16(link.currentSpeed.rawValue) | UInt16(link.currentWidth & 0x3f) << 4 | 0x1000  // slot clock
            if pcie.portType.isDownstreamFacing && hasChildren { linkStatus |= 0x2000 }  // link active
            config.set16(offset + 0x12, linkStatus)
            config.set32(offset + 0x2c, UInt32((1 << link.maxSpeed.rawValue) - 1) << 1)  // supported speeds vector
            config.set16(offset + 0x30, UInt16(link.maxSpeed.rawValue))  // target link speed
        }
        if slotImplemented, let slot = pcie.slotNumber {
            config.set32(offset + 0x14, UInt32(slot & 0x1fff) << 19)
            config.set16(offset + 0x1a, hasChildren ? 0x0040 : 0)  // presence detect state
        }
        let forwardsARI = pcie.portType.isDownstreamFacing
        config.set32(offset + 0x24, 0x0000_001f | (forwardsARI ? 0x20 : 0))  // completion timeout ranges, ARI forwarding
        config.set16(offset + 0x28, forwardsARI ? 0x0020 : 0)
    }

    private func writeExtendedCapabilities(into config: inout ConfigSpace) {
        guard let pcie = device.pcie else { return }
        var chain: [(id: UInt16, version: UInt8, length: Int)] = []
        if !isVirtualFunction && pcie.portType != .rootComplexIntegratedEndpoint {
            chain.append((ExtendedCapabilityID.advancedErrorReporting, 2, 0x48))
        }
        if let acs = device.acs {
            let egressVectorBytes = acs.capabilities.contains(.egressControl) ? 4 : 0
            chain.append((ExtendedCapabilityID.accessControlServices, 1, 8 + egressVectorBytes))
        }
        if device.sriov != nil || isVirtualFunction {
            chain.append((ExtendedCapabilityID.alternativeRoutingID, 1, 8))
        }
        if device.sriov != nil {
            chain.append((ExtendedCapabilityID.singleRootIOV, 1, 0x40))
        }
        if !device.resizableBARs.isEmpty {
            chain.append((ExtendedCapabilityID.resizableBAR, 1, 4 + 8 * device.resizableBARs.count))
        }

        var offsets: [Int] = []
        var next = PCIRegister.firstExtendedCapability
        for capability in chain {
            offsets.append(next)
            next = (next + capability.length + 0xf) & ~0xf
        }
        for (position, capability) in chain.enumerated() {
            let offset = offsets[position]
            let nextOffset = position + 1 < offsets.count ? UInt32(offsets[position + 1]) : 0
            config.set32(offset, UInt32(capability.id) | UInt32(capability.version) << 16 | nextOffset << 20)
            switch capability.id {
            case ExtendedCapabilityID.advancedErrorReporting:
                config.set32(offset + 0x0c, 0x0046_2030)  // uncorrectable severity: the spec's defaults
                config.set32(offset + 0x14, 0x0000_2000)  // correctable mask: advisory non-fatal
                config.set32(offset + 0x18, 0x0000_00a0)  // ECRC generation/check capable
            case ExtendedCapabilityID.accessControlServices:
                if let acs = device.acs {
                    let vectorSizeField: UInt16 = acs.capabilities.contains(.egressControl) ? 8 << 8 : 0
                    config.set16(offset + 4, acs.capabilities.rawValue | vectorSizeField)
                    config.set16(offset + 6, acs.control.rawValue)
                }
            case ExtendedCapabilityID.alternativeRoutingID:
                config.set16(offset + 4, 0)  // next function number: none
            case ExtendedCapabilityID.singleRootIOV:
                writeSRIOVCapability(at: offset, into: &config)
            case ExtendedCapabilityID.resizableBAR:
                // Per BAR: capability (sizes from bit 4) at +4, control (index, count in the
                // first, current size code in bits 12:8) at +8.
                for (entry, bar) in device.resizableBARs.prefix(6).enumerated() {
                    let size = device.bars.first { $0.index == bar.index }?.size ?? 0
                    let code = size >= 1 << 20 ? UInt32(size.trailingZeroBitCount - 20) : 0
                    let count: UInt32 = entry == 0 ? UInt32(min(device.resizableBARs.count, 6)) << 5 : 0
                    config.set32(offset + 4 + 8 * entry, UInt32(truncatingIfNeeded: bar.sizeMask << 4))
                    config.set32(offset + 8 + 8 * entry, UInt32(bar.index & 7) | count | (code & 0x1f) << 8)
                }
            default:
                break
            }
        }
    }

    private func writeSRIOVCapability(at offset: Int, into config: inout ConfigSpace) {
        guard let sriov = device.sriov else { return }
        var control: UInt16 = 0x0010  // ARI capable hierarchy
        if sriov.numVFs > 0 { control |= 0x0001 | 0x0008 }  // VF enable, VF memory space enable
        config.set16(offset + 0x08, control)
        config.set16(offset + 0x0c, UInt16(clamping: sriov.totalVFs))  // InitialVFs
        config.set16(offset + 0x0e, UInt16(clamping: sriov.totalVFs))
        config.set16(offset + 0x10, UInt16(clamping: sriov.numVFs))
        config.set16(offset + 0x14, UInt16(clamping: sriov.firstVFOffset))
        config.set16(offset + 0x16, UInt16(clamping: sriov.vfStride))
        config.set16(offset + 0x1a, sriov.vfDeviceID)
        config.set32(offset + 0x1c, 0x0000_0553)  // supported page sizes 4K..
        config.set32(offset + 0x20, 0x0000_0001)  // system page size 4K
        for bar in sriov.vfBARs where bar.index >= 0 && bar.index < 6 {
            let barOffset = offset + 0x24 + 4 * bar.index
            config.set32(barOffset, UInt32(truncatingIfNeeded: bar.start) | bar.registerTypeBits)
            if bar.is64Bit && bar.index < 5 {
                config.set32(barOffset + 4, UInt32(truncatingIfNeeded: bar.start >> 32))
            }
        }
    }
}
