import ArgumentParser
import BARPlacement
import Diagnostics
import Foundation
import PCIInventory
import TextFormat
import VFIO

/// `vfioctl dma`: the container's IOMMU and DMA mappings.
public struct DMA: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "dma",
        abstract: "Check a device's VFIO container for DMA: IOVA ranges, page sizes, limits; map and unmap buffers.",
        discussion: """
            The device must be bound to vfio-pci and its group viable.

            Examples:
              vfioctl dma check 0000:00:02.0
              vfioctl dma check 00:02.0 --size 64M --chunks 16 --json
            """,
        subcommands: [Check.self, Bench.self, BenchBAR.self, EduTest.self, PeerToPeer.self]
    )
    public init() {}

    /// `dma check`: container facts, and a test buffer mapped and unmapped.
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Report IOVA ranges, IOMMU page sizes, dma_avail and RLIMIT_MEMLOCK, then map and unmap a test buffer.",
            discussion: """
                Examples:
                  vfioctl dma check 0000:01:00.0
                  vfioctl dma check 01:00.0 --size 64M --chunks 16 --json
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address"))
        var address: PCIAddress
        @OptionGroup var backend: BackendOption
        @Option(name: .long, help: ArgumentHelp("Bytes to map (4 KiB multiple; 0x hex or K/M/G).", valueName: "bytes"))
        var size: PageLength = PageLength(2 << 20)
        @Option(name: .long, help: ArgumentHelp("Map the buffer as this many equal mappings.", valueName: "n"))
        var chunks: UInt64 = 1
        @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Also judge a whole VM with this much RAM (e.g. 16G): memlock, mappings, address width.", valueName: "size"))
        var vmMemory: MemorySize?
        @OptionGroup var vm: VMShapeOptions

        func validate() throws {
            let bytes = size.value
            guard chunks > 0, bytes % chunks == 0, (bytes / chunks) % 4096 == 0 else { throw ValidationError("--chunks must split --size into 4 KiB multiples") }
        }

        func run() throws {
            let target = address
            let bytes = size.value
            let report: DMACheckJSON
            do throws(VFIOError) {
                let device = try backend.open(target, sysfsRoot: global.resolvedRoot.path)
                guard let container = device.dmaSpace else { throw VFIOError.unsupported("\(target) has no DMA space") }
                let before = try container.iommuInfo()
                let limit = MemlockLimit.read()
                var budget: VMDMABudget?
                if let ram = vmMemory?.bytes {
                    // This device's mappable BARs, once per device the VM gets, placed after RAM.
                    var bars: [UInt64] = []
                    for index in 0..<PCIRegion.barCount {
                        if let region = try? device.regionInfo(PCIRegion.bar(index)), region.size > 0, region.isMappable { bars.append(region.size) }
                    }
                    // The top IOVA range's end is 2^width - 1.
                    let top = (before.iovaRanges ?? []).map(\.end).max()
                    var input = VMDMABudget.Input(
                        guestMemory: ram, devices: vm.vmDevices.value, vIOMMU: vm.viommu, pageSize: vm.vmPageSize.bytes,
                        barSizes: Array(repeating: bars, count: vm.vmDevices.value).flatMap { $0 },
                        memlockLimit: limit.exempt ? nil : limit.current,
                        dmaEntryLimit: before.dmaAvailable.map(UInt64.init),
                        addressWidth: top.map { 64 - $0.leadingZeroBitCount })
                    input.accounting = device.backend == .iommufd ? .iommufd : .type1
                    budget = VMDMABudget(input)
                }
                // Both limits are checked before anything is mapped.
                try container.checkDMABudget(ramBytes: bytes, mappings: chunks)
                let chunkSize = Int(bytes / chunks)
                var buffers: [DMABuffer] = []
                var mappings: [DMAMapping] = []
                let clock = ContinuousClock()
                let began = clock.now
                do throws(VFIOError) {
                    for _ in 0..<chunks {
                        let buffer = try DMABuffer(size: chunkSize)
                        buffers.append(buffer)
                        mappings.append(try container.mapDMA(buffer))
                    }
                } catch {
                    try? container.unmapAllDMA()
                    throw error
                }
                let mapped = clock.now - began
                let during = try container.iommuInfo()
                try container.unmapAllDMA()
                let after = try container.iommuInfo()
                report = DMACheckJSON(
                    address: target.description, group: try device.iommuGroupNumber(), backend: device.backend.rawValue,
                    iovaPageSizes: before.iovaPageSizes, pageSizes: pageSizeList(before.iovaPageSizes),
                    iovaRanges: (before.iovaRanges ?? []).map { IOVARangeJSON(start: $0.start, end: $0.end) },
                    dmaAvailable: before.dmaAvailable, dmaAvailableWhileMapped: during.dmaAvailable, dmaAvailableAfter: after.dmaAvailable,
                    memlockCurrent: limit.current, memlockMaximum: limit.maximum, memlockExempt: limit.exempt,
                    testBytes: bytes, testMappings: mappings.map { DMAMappingJSON(iova: $0.iova, size: $0.size) },
                    backing: buffers.first?.backing.rawValue ?? "", mapMilliseconds: milliseconds(mapped),
                    leftMapped: container.dmaMappings.count, vmBudget: VMBudgetJSON(budget))
            } catch {
                throw CommandFailure("dma check \(target): \(error.description)")
            }
            if global.json {
                print(try JSONOutput.encode(report))
            } else {
                print("\(report.address) (IOMMU group \(report.group), \(report.backend))")
                print("  IOMMU page sizes: \(report.pageSizes.map { byteCount($0) }.joined(separator: ", ")) (\(report.iovaPageSizes.hex()))")
                print("  IOVA ranges: " + report.iovaRanges.map { "\($0.start.hex())-\($0.end.hex())" }.joined(separator: ", "))
                print("  dma_avail: \(report.dmaAvailable.map(String.init) ?? (report.backend == "iommufd" ? "none (iommufd has no entry limit)" : "not reported"))")
                print("  RLIMIT_MEMLOCK: \(report.memlockCurrent.map { byteCount($0) } ?? "unlimited") (max \(report.memlockMaximum.map { byteCount($0) } ?? "unlimited"))\(report.memlockExempt ? "; not applied: this process has CAP_IPC_LOCK" : "")")
                print("  test: mapped \(byteCount(report.testBytes)) as \(report.testMappings.count) mapping(s) (\(report.backing)) at IOVA " +
                      report.testMappings.map { "\($0.iova.hex())" }.joined(separator: ", ") +
                      " in \(String(format: "%.2f", report.mapMilliseconds)) ms; dma_avail while mapped \(report.dmaAvailableWhileMapped.map(String.init) ?? "?"), after unmap \(report.dmaAvailableAfter.map(String.init) ?? "?")")
                if let budget = report.vmBudget.budget {
                    let verdict: (Bool?) -> String = { $0.map { $0 ? "fits" : "EXCEEDS" } ?? "unknown" }
                    print("  VM with \(byteCount(budget.input.guestMemory)) of RAM, \(budget.input.devices) such device(s)\(budget.input.vIOMMU ? ", vIOMMU" : ""):")
                    print("    memlock: needs \(budget.memlockNeeded.map { byteCount($0) } ?? "more than 16 EiB"): \(verdict(budget.memlockFits))")
                    print("    DMA mappings per container: up to \(budget.mappingsPerContainer) against dma_avail \(budget.input.dmaEntryLimit.map(String.init) ?? "?"): \(verdict(budget.mappingsFit))")
                    print("    guest addresses up to \(budget.highestAddress.map { $0.hex() } ?? "beyond 64 bits") against \(budget.input.addressWidth.map { "\($0)-bit" } ?? "unknown") IOVA: \(verdict(budget.addressFits))")
                }
            }
        }
    }
}

/// `dma bench --json`: the best of the repetitions, per call and per GiB.
struct DMABenchJSON: Encodable {
    let address: String
    let bytes: UInt64
    let backing: String
    let repetitions: Int
    let map_ms: Double
    let unmap_ms: Double
    let map_ms_per_gib: Double
    let unmap_ms_per_gib: Double
    let map_median_ms: Double
    let unmap_median_ms: Double
}

/// `dma bench --backing`: what backs the buffer.
enum BenchBacking: String, ExpressibleByArgument, CaseIterable {
    /// hugetlb 1 GiB or 2 MiB pages where reserved, else transparent huge pages (DMABuffer's default).
    case auto
    /// 4 KiB pages only (MADV_NOHUGEPAGE).
    case base = "4k"
    /// Reserved 2 MiB hugetlb pages, or an error.
    case huge2M = "2m"
}

struct IOVARangeJSON: Encodable { let start: UInt64; let end: UInt64 }
struct DMAMappingJSON: Encodable { let iova: UInt64; let size: UInt64 }

struct DMACheckJSON: Encodable {
    let address: String
    let group: Int
    /// "type1" or "iommufd".
    let backend: String
    let iovaPageSizes: UInt64
    let pageSizes: [UInt64]
    let iovaRanges: [IOVARangeJSON]
    let dmaAvailable: UInt32?
    let dmaAvailableWhileMapped: UInt32?
    let dmaAvailableAfter: UInt32?
    let memlockCurrent: UInt64?
    let memlockMaximum: UInt64?
    /// CAP_IPC_LOCK: the kernel does not hold this process to RLIMIT_MEMLOCK.
    let memlockExempt: Bool
    let testBytes: UInt64
    let testMappings: [DMAMappingJSON]
    let backing: String
    let mapMilliseconds: Double
    let leftMapped: Int
    let vmBudget: VMBudgetJSON
    enum CodingKeys: String, CodingKey {
        case address, group, backend, backing, vmBudget = "vm_budget"
        case iovaPageSizes = "iova_pgsizes", pageSizes = "page_sizes", iovaRanges = "iova_ranges"
        case dmaAvailable = "dma_avail", dmaAvailableWhileMapped = "dma_avail_while_mapped", dmaAvailableAfter = "dma_avail_after"
        case memlockCurrent = "memlock_current", memlockMaximum = "memlock_maximum", memlockExempt = "memlock_exempt"
        case testBytes = "test_bytes", testMappings = "test_mappings", mapMilliseconds = "map_ms", leftMapped = "left_mapped"
    }
}

/// `vm_budget` in `dma check --json`: null without --vm-memory, every key present with it.
struct VMBudgetJSON: Encodable {
    let budget: VMDMABudget?
    init(_ budget: VMDMABudget?) { self.budget = budget }
    enum Keys: String, CodingKey {
        case guest_memory, devices, viommu, memlock_needed, memlock_fits, mappings_per_container, dma_entry_limit,
             mappings_fit, highest_address, address_width, address_fits, fits
    }
    func encode(to encoder: Encoder) throws {
        guard let budget else {
            var single = encoder.singleValueContainer()
            try single.encodeNil()
            return
        }
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(budget.input.guestMemory, forKey: .guest_memory)
        try container.encode(budget.input.devices, forKey: .devices)
        try container.encode(budget.input.vIOMMU, forKey: .viommu)
        try container.encode(budget.memlockNeeded, forKey: .memlock_needed)
        try container.encode(budget.memlockFits, forKey: .memlock_fits)
        try container.encode(budget.mappingsPerContainer, forKey: .mappings_per_container)
        try container.encode(budget.input.dmaEntryLimit, forKey: .dma_entry_limit)
        try container.encode(budget.mappingsFit, forKey: .mappings_fit)
        try container.encode(budget.highestAddress, forKey: .highest_address)
        try container.encode(budget.input.addressWidth, forKey: .address_width)
        try container.encode(budget.addressFits, forKey: .address_fits)
        try container.encode(budget.fits, forKey: .fits)
    }
}

func pageSizeList(_ bitmap: UInt64) -> [UInt64] {
    (0..<64).compactMap { bit in bitmap & (1 << UInt64(bit)) != 0 ? 1 << UInt64(bit) : nil }
}

func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

extension DMA {
    /// `dma bench`: time VFIO_IOMMU_MAP_DMA and UNMAP_DMA of a buffer.
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench",
            abstract: "Time mapping and unmapping a pre-touched buffer for DMA (per GiB).",
            discussion: """
                --size must be a multiple of 2 MiB.

                Example:
                  vfioctl dma bench 0000:01:00.0 --size 1G --repeat 5
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("A device bound to vfio-pci (its container is used).", valueName: "address"))
        var address: PCIAddress
        @OptionGroup var backend: BackendOption
        @Option(name: .long, help: ArgumentHelp("Buffer bytes (0x hex or K/M/G).", valueName: "bytes"))
        var size: HugePageMultiple = HugePageMultiple(256 << 20)
        @Option(name: .customLong("repeat"), help: ArgumentHelp("Repetitions; the best and the median are reported.", valueName: "n"))
        var repetitions: PositiveCount = PositiveCount(3)
        @Option(name: .long, help: ArgumentHelp("What backs the buffer: auto (hugetlb pages where reserved, else transparent huge pages), 4k (4 KiB pages only) or 2m (reserved 2 MiB hugetlb pages).", valueName: "backing"))
        var backing: BenchBacking = .auto

        func run() throws {
            let target = address
            // At most 128 TiB, so it fits an Int.
            let bytes = size.value, count = Int(size.value), repetitions = repetitions.value
            var mapTimes: [Double] = [], unmapTimes: [Double] = []
            let backing: String
            do throws(VFIOError) {
                let device = try backend.open(target, sysfsRoot: global.resolvedRoot.path)
                guard let container = device.dmaSpace else { throw VFIOError.unsupported("\(target) has no DMA space") }
                let buffer: DMABuffer
                switch self.backing {
                case .auto: buffer = try DMABuffer(size: count)
                case .base: buffer = try DMABuffer(size: count, backing: .basePages)
                case .huge2M: buffer = try DMABuffer(size: count, backing: .hugeTLB2M)
                }
                backing = buffer.backing.rawValue
                // Touch every page first, so the timing is the IOMMU work, not page allocation.
                for offset in stride(from: 0, to: count, by: 4096) { try buffer.store8(1, at: offset) }
                let clock = ContinuousClock()
                for _ in 0..<max(1, repetitions) {
                    let t0 = clock.now
                    let mapping = try container.mapDMA(buffer)
                    let t1 = clock.now
                    try container.unmapDMA(mapping)
                    let t2 = clock.now
                    mapTimes.append(milliseconds(t1 - t0))
                    unmapTimes.append(milliseconds(t2 - t1))
                }
            } catch {
                throw CommandFailure("dma bench \(target): \(error.description)")
            }
            let gib = Double(bytes) / Double(1 << 30)
            let bestMap = mapTimes.min() ?? 0, bestUnmap = unmapTimes.min() ?? 0
            let medianMap = median(mapTimes), medianUnmap = median(unmapTimes)
            if global.json {
                print(try JSONOutput.encode(DMABenchJSON(address: target.description, bytes: bytes, backing: backing, repetitions: mapTimes.count,
                                                         map_ms: bestMap, unmap_ms: bestUnmap, map_ms_per_gib: bestMap / gib, unmap_ms_per_gib: bestUnmap / gib,
                                                         map_median_ms: medianMap, unmap_median_ms: medianUnmap)))
                return
            }
            print(String(format: "vfioctl map_ms=%.3f unmap_ms=%.3f map_ms_per_gib=%.3f unmap_ms_per_gib=%.3f map_median_ms=%.3f unmap_median_ms=%.3f bytes=%llu backing=%@",
                         bestMap, bestUnmap, bestMap / gib, bestUnmap / gib, medianMap, medianUnmap, bytes, backing))
        }
    }
}
