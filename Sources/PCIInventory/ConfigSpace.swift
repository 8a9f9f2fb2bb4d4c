import CLinuxUAPI

/// Read-only decoding of a PCI configuration space image (the device's sysfs `config` file).
/// Pure: it takes bytes and never touches the device.
public struct PCIConfigSpace: Sendable {
    /// The image's bytes (64 for an unprivileged read of sysfs `config`, 256 or 4096 as root).
    public let bytes: [UInt8]

    /// Decodes `bytes`.
    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// The standard header is 64 bytes; anything shorter cannot be decoded.
    public var hasHeader: Bool { bytes.count >= 64 }

    /// The byte at `offset`; nil past the image's end.
    public func u8(_ offset: Int) -> UInt8? {
        offset >= 0 && offset < bytes.count ? bytes[offset] : nil
    }

    /// The little-endian 16-bit value at `offset`; nil past the image's end.
    public func u16(_ offset: Int) -> UInt16? {
        guard offset >= 0, offset + 2 <= bytes.count else { return nil }
        return UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    /// The little-endian 32-bit value at `offset`; nil past the image's end.
    public func u32(_ offset: Int) -> UInt32? {
        guard offset >= 0, offset + 4 <= bytes.count else { return nil }
        return UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8
            | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
    }

    /// Vendor ID (offset 0x00); nil without a header.
    public var vendorID: UInt16? { hasHeader ? u16(0x00) : nil }
    /// Device ID (offset 0x02).
    public var deviceID: UInt16? { hasHeader ? u16(0x02) : nil }
    /// Command register (offset 0x04).
    public var command: UInt16? { hasHeader ? u16(Int(PCI_COMMAND)) : nil }
    /// Revision ID (offset 0x08).
    public var revision: UInt8? { hasHeader ? u8(0x08) : nil }
    /// The 24-bit class code (offsets 0x09-0x0b).
    public var classCode: UInt32? {
        guard hasHeader, let low = u32(0x08) else { return nil }
        return low >> 8
    }
    /// Header type without the multi-function bit: 0 endpoint, 1 PCI-PCI bridge, 2 CardBus.
    public var headerType: UInt8? { hasHeader ? u8(0x0e).map { $0 & 0x7f } : nil }

    /// Offsets of the standard capabilities by ID, following the list from 0x34.
    public func capabilityOffset(_ id: UInt8) -> Int? {
        guard hasHeader, let status = u16(Int(PCI_STATUS)), status & UInt16(PCI_STATUS_CAP_LIST) != 0,
              var pointer = u8(Int(PCI_CAPABILITY_LIST)).map({ Int($0) & ~3 }) else { return nil }
        var visited = 0
        // A looping or garbage list must not hang us: 48 capabilities fit in 192 bytes.
        while pointer >= 0x40, visited < 48 {
            guard let capID = u8(pointer), let next = u8(pointer + 1) else { return nil }
            if capID == id { return pointer }
            pointer = Int(next) & ~3
            visited += 1
        }
        return nil
    }

    /// Offsets of PCIe extended capabilities by ID, following the list from 0x100.
    public func extendedCapabilityOffset(_ id: UInt16) -> Int? {
        var pointer = 0x100
        var visited = 0
        while pointer >= 0x100, visited < 960 {
            guard let header = u32(pointer), header != 0, header != 0xffff_ffff else { return nil }
            if UInt16(header & 0xffff) == id { return pointer }
            pointer = Int(header >> 20) & ~3
            visited += 1
        }
        return nil
    }

    /// The PCI Express device/port type from the PCIe capability, when there is one.
    public var expressPortType: PCIExpressPortType? {
        guard let cap = capabilityOffset(PCIConfigSpace.expressCapabilityID),
              let flags = u16(cap + Int(PCI_EXP_FLAGS)) else { return nil }
        return PCIExpressPortType(rawValue: UInt8((flags >> 4) & 0xf))
    }

    /// The ACS extended capability: what the port supports and what is enabled.
    public var accessControlServices: ACSStatus? {
        guard let cap = extendedCapabilityOffset(PCIConfigSpace.acsExtendedCapabilityID),
              let capability = u16(cap + Int(PCI_ACS_CAP)), let control = u16(cap + Int(PCI_ACS_CTRL)) else { return nil }
        return ACSStatus(supported: ACSControls(rawValue: capability & ACSControls.all.rawValue),
                         enabled: ACSControls(rawValue: control & ACSControls.all.rawValue))
    }

    /// Where the MSI-X table and pending-bit array live, from the MSI-X capability.
    public var msix: MSIXLayout? {
        guard let cap = capabilityOffset(PCIConfigSpace.msixCapabilityID), let control = u16(cap + Int(PCI_MSIX_FLAGS)),
              let table = u32(cap + Int(PCI_MSIX_TABLE)), let pba = u32(cap + Int(PCI_MSIX_PBA)) else { return nil }
        let entries = Int(control & UInt16(PCI_MSIX_FLAGS_QSIZE)) + 1
        let tableBIR = UInt32(PCI_MSIX_TABLE_BIR), pbaBIR = UInt32(PCI_MSIX_PBA_BIR)
        return MSIXLayout(vectors: entries,
                          tableBAR: Int(table & tableBIR), tableOffset: UInt64(table & ~tableBIR), tableSize: UInt64(entries) * UInt64(PCI_MSIX_ENTRY_SIZE),
                          pbaBAR: Int(pba & pbaBIR), pbaOffset: UInt64(pba & ~pbaBIR), pbaSize: UInt64((entries + 63) / 64) * 8)
    }

    // Capability IDs from linux/pci_regs.h.
    static let msixCapabilityID = UInt8(PCI_CAP_ID_MSIX)
    static let expressCapabilityID = UInt8(PCI_CAP_ID_EXP)
    static let acsExtendedCapabilityID = UInt16(PCI_EXT_CAP_ID_ACS)
}

/// PCIe device/port types (PCIe capability register bits 7:4).
public enum PCIExpressPortType: UInt8, Sendable {
    case endpoint = 0x0
    case legacyEndpoint = 0x1
    case rootPort = 0x4
    case upstreamSwitchPort = 0x5
    case downstreamSwitchPort = 0x6
    case expressToPCIBridge = 0x7
    case pciToExpressBridge = 0x8
    case rootComplexIntegratedEndpoint = 0x9
    case rootComplexEventCollector = 0xa

    /// The port type in words, as `show` prints it.
    public var name: String {
        switch self {
        case .endpoint: "endpoint"
        case .legacyEndpoint: "legacy endpoint"
        case .rootPort: "root port"
        case .upstreamSwitchPort: "upstream switch port"
        case .downstreamSwitchPort: "downstream switch port"
        case .expressToPCIBridge: "PCIe-to-PCI bridge"
        case .pciToExpressBridge: "PCI-to-PCIe bridge"
        case .rootComplexIntegratedEndpoint: "root complex integrated endpoint"
        case .rootComplexEventCollector: "root complex event collector"
        }
    }
}

/// ACS control bits (ACS capability/control registers, linux/pci_regs.h).
public struct ACSControls: OptionSet, Sendable, Hashable {
    /// The register bits.
    public let rawValue: UInt16
    /// Controls from their register bits.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Source Validation.
    public static let sourceValidation = ACSControls(rawValue: UInt16(PCI_ACS_SV))
    /// Translation Blocking.
    public static let translationBlocking = ACSControls(rawValue: UInt16(PCI_ACS_TB))
    /// P2P Request Redirect.
    public static let requestRedirect = ACSControls(rawValue: UInt16(PCI_ACS_RR))
    /// P2P Completion Redirect.
    public static let completionRedirect = ACSControls(rawValue: UInt16(PCI_ACS_CR))
    /// Upstream Forwarding.
    public static let upstreamForwarding = ACSControls(rawValue: UInt16(PCI_ACS_UF))
    /// P2P Egress Control.
    public static let egressControl = ACSControls(rawValue: UInt16(PCI_ACS_EC))
    /// Direct Translated P2P.
    public static let directTranslatedP2P = ACSControls(rawValue: UInt16(PCI_ACS_DT))
    /// Every control the capability defines.
    public static let all: ACSControls = [.sourceValidation, .translationBlocking, .requestRedirect, .completionRedirect,
                                          .upstreamForwarding, .egressControl, .directTranslatedP2P]

    /// The controls the kernel needs enabled on a port to keep devices below it in their own
    /// IOMMU groups (pci_acs_enabled with REQ_ACS_FLAGS: SV, RR, CR, UF).
    public static let isolationRequired: ACSControls = [
        .sourceValidation, .requestRedirect, .completionRedirect, .upstreamForwarding,
    ]

    /// Short names as lspci prints them (SrcValid, TransBlk, ...).
    public var names: [String] {
        var names: [String] = []
        if contains(.sourceValidation) { names.append("SrcValid") }
        if contains(.translationBlocking) { names.append("TransBlk") }
        if contains(.requestRedirect) { names.append("ReqRedir") }
        if contains(.completionRedirect) { names.append("CmpltRedir") }
        if contains(.upstreamForwarding) { names.append("UpstreamFwd") }
        if contains(.egressControl) { names.append("EgressCtrl") }
        if contains(.directTranslatedP2P) { names.append("DirectTrans") }
        return names
    }
}

/// A port's ACS capability: what it implements and what is enabled.
public struct ACSStatus: Sendable, Equatable {
    /// Controls the port implements (capability register).
    public let supported: ACSControls
    /// Controls enabled now (control register).
    public let enabled: ACSControls

    /// Whether the enabled controls isolate the devices below this port, as the kernel judges
    /// it when it forms IOMMU groups. A control the port does not implement is not required.
    public var isolates: Bool {
        let needed = ACSControls.isolationRequired.intersection(supported)
        return enabled.isSuperset(of: needed) && !supported.intersection(.isolationRequired).isEmpty
    }
}

/// The MSI-X table (16 bytes a vector) and pending-bit array (a bit a vector, in qwords): the
/// parts of a device's BARs that a VMM must trap and emulate rather than map into a guest,
/// because the host kernel owns the real ones.
public struct MSIXLayout: Sendable, Equatable {
    /// Vectors the device has (table entries).
    public let vectors: Int
    /// The BAR that holds the table.
    public let tableBAR: Int
    /// The table's offset in that BAR.
    public let tableOffset: UInt64
    /// The table's size in bytes (16 per vector).
    public let tableSize: UInt64
    /// The BAR that holds the pending-bit array.
    public let pbaBAR: Int
    /// The PBA's offset in that BAR.
    public let pbaOffset: UInt64
    /// The PBA's size in bytes (whole qwords).
    public let pbaSize: UInt64

    /// A layout as given (tests; decoding makes it from the MSI-X capability).
    public init(vectors: Int, tableBAR: Int, tableOffset: UInt64, tableSize: UInt64, pbaBAR: Int, pbaOffset: UInt64, pbaSize: UInt64) {
        self.vectors = vectors
        self.tableBAR = tableBAR
        self.tableOffset = tableOffset
        self.tableSize = tableSize
        self.pbaBAR = pbaBAR
        self.pbaOffset = pbaOffset
        self.pbaSize = pbaSize
    }

    /// The byte ranges of `bar` that hold the table or the PBA, widened to whole pages.
    public func trappedPages(bar: Int, pageSize: UInt64 = 4096) -> [Range<UInt64>] {
        var ranges: [Range<UInt64>] = []
        for (index, offset, size) in [(tableBAR, tableOffset, tableSize), (pbaBAR, pbaOffset, pbaSize)] where index == bar && size > 0 {
            let start = offset / pageSize * pageSize
            let end = (offset + size + pageSize - 1) / pageSize * pageSize
            ranges.append(start..<end)
        }
        return ranges.sorted { $0.lowerBound < $1.lowerBound }
    }
}
