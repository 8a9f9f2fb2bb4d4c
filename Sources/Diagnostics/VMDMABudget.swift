import VFIO

/// What a VM with N assigned devices asks of the host's DMA limits, before it starts. Pure.
///
/// - memlock: libvirt's rule (qemuDomainGetMemLockLimitBytes, x86, no `<hard_limit>` and no
///   `<locked/>` memory backing, which replace it): guest RAM pinned once for all VFIO devices,
///   or once per device when the guest has a vIOMMU (each device then sits in its own address
///   space, each pinning all RAM), plus 1 GiB for MMIO; nothing at all without a VFIO device.
/// - DMA mappings: vfio_iommu_type1 allows `dma_entry_limit` mappings per container (65535 by
///   default). Without a vIOMMU the VMM maps guest RAM in a few large pieces; with one, the guest
///   maps pages one by one, so at worst RAM / page size mappings per device.
/// - iommufd (`accounting == .iommufd`): the same pinned RAM, but charged to the user running the
///   VMM (every VM of that user shares one RLIMIT_MEMLOCK, see `PinAccounting`), and no entry
///   limit: `mappingsFit` is nil.
/// - Address width: with IOVA = guest physical address, the top of guest RAM (and of the 64-bit
///   BARs placed above it) must lie below 2^width of the IOMMU.
public struct VMDMABudget: Sendable, Equatable {
    public struct Input: Sendable, Equatable {
        public var guestMemory: UInt64
        public var devices: Int
        public var vIOMMU: Bool
        /// The page the guest maps for DMA with a vIOMMU (4 KiB unless it uses huge IOMMU pages).
        public var pageSize: UInt64
        /// Sizes of the devices' 64-bit BARs, placed after guest RAM.
        public var barSizes: [UInt64]
        /// nil: unlimited (or CAP_IPC_LOCK).
        public var memlockLimit: UInt64?
        public var dmaEntryLimit: UInt64?
        public var addressWidth: Int?
        /// Whose count the pins are charged to: the backend's rule (type1 unless said).
        public var accounting: PinAccounting = .type1

        public init(guestMemory: UInt64, devices: Int, vIOMMU: Bool, pageSize: UInt64 = 4096, barSizes: [UInt64] = [],
                    memlockLimit: UInt64?, dmaEntryLimit: UInt64?, addressWidth: Int?) {
            self.guestMemory = guestMemory
            self.devices = devices
            self.vIOMMU = vIOMMU
            self.pageSize = pageSize
            self.barSizes = barSizes
            self.memlockLimit = memlockLimit
            self.dmaEntryLimit = dmaEntryLimit
            self.addressWidth = addressWidth
        }
    }

    /// Where RAM above 4 GiB starts on q35 and how much stays below: QEMU keeps 2 GiB low when
    /// the guest has 2.75 GiB or more, otherwise all of it.
    static let fourGiB: UInt64 = 1 << 32

    public let input: Input
    /// nil when the figure overflows 64 bits (then it certainly does not fit).
    public let memlockNeeded: UInt64?
    public let mappingsPerContainer: UInt64
    /// The highest guest physical address used: RAM's end, then the BARs after it.
    public let highestAddress: UInt64?
    public let memlockFits: Bool?
    public let mappingsFit: Bool?
    public let addressFits: Bool?

    public init(_ input: Input) {
        self.input = input
        let devices = UInt64(max(input.devices, 0))
        let factor: UInt64 = devices == 0 ? 0 : input.vIOMMU ? devices : 1
        let (pinned, overflow) = factor.multipliedReportingOverflow(by: input.guestMemory)
        let (withMMIO, overflow2) = pinned.addingReportingOverflow(factor == 0 ? 0 : 1 << 30)
        let needed = overflow || overflow2 ? nil : withMMIO
        memlockNeeded = needed
        let page = max(input.pageSize, 4096)
        // Without a vIOMMU: RAM below and above 4 GiB, and each device's BARs for peer-to-peer.
        let mappings = input.vIOMMU
            ? input.guestMemory / page + (input.guestMemory % page == 0 ? 0 : 1)
            : 2 + UInt64(input.barSizes.count)
        mappingsPerContainer = mappings
        let low = input.guestMemory >= 0xb000_0000 ? UInt64(1) << 31 : input.guestMemory
        var top: UInt64? = low
        if input.guestMemory > low {
            let (end, overflow) = Self.fourGiB.addingReportingOverflow(input.guestMemory - low)
            top = overflow ? nil : end
        }
        // BARs after RAM, each aligned to its size (largest first, as firmware places them).
        for size in input.barSizes.sorted(by: >) where size > 0 {
            guard let current = top else { break }
            let mask = size - 1
            let (aligned, o1) = current.addingReportingOverflow(mask)
            let (end, o2) = (aligned & ~mask).addingReportingOverflow(size)
            top = o1 || o2 ? nil : end
        }
        highestAddress = top
        let highest = top
        memlockFits = input.memlockLimit.map { limit in needed.map { $0 <= limit } ?? false } ?? true
        // iommufd has no per-space entry limit.
        mappingsFit = input.accounting == .iommufd ? nil : input.dmaEntryLimit.map { mappings <= $0 }
        addressFits = input.addressWidth.map { width in
            guard let top = highest else { return false }
            return width >= 64 || top <= UInt64(1) << UInt64(width)
        }
    }

    public var fits: Bool { memlockFits != false && mappingsFit != false && addressFits != false }
}
