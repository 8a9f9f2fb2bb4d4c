import ArgumentParser
import BARPlacement
import Foundation
import HostKernel
import PCIInventory
import VFIO

extension DMA {
    /// `dma bench-bar`: time VFIO_IOMMU_MAP_DMA of a BAR mapping (peer-to-peer DMA), placed or
    /// skewed, with its page tables made first or not.
    struct BenchBAR: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench-bar",
            abstract: "Time DMA-mapping a BAR mapping for peer-to-peer (VFIO_IOMMU_MAP_DMA of a VM_PFNMAP VMA), placed or skewed.",
            discussion: """
                Each repetition maps the BAR (or the --offset/--length window) afresh at vfioctl's
                placement plus --skew, with MADV_HUGEPAGE unless --no-madvise, reads one byte per
                page first with --touch, then times VFIO_IOMMU_MAP_DMA and VFIO_IOMMU_UNMAP_DMA of
                the whole mapping and unmaps it. type1 translates a PFN-mapped VA by walking its
                page tables (faulting in what is missing); from Linux 6.15 it steps one mapping
                level at a time, so a BAR mapped with 1 GiB pages maps in a few steps. The median
                is reported.

                Example:
                  vfioctl dma bench-bar 0000:00:03.0 --bar 2 --length 1G --skew 4K --touch --repeat 5
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("A device bound to vfio-pci; its BAR is mapped into its own container.", valueName: "address"))
        var address: String
        @Option(name: .long, help: ArgumentHelp("The BAR, 0-5.", valueName: "n"))
        var bar: Int
        @Option(name: .long, help: ArgumentHelp("Bytes to move the mapping off vfioctl's placement (4 KiB multiple; 0x hex or K/M/G).", valueName: "bytes"))
        var skew: String = "0"
        @Flag(name: .long, help: "Read one byte of every page before each DMA map.")
        var touch = false
        @Flag(name: .customLong("no-madvise"), help: "Map without MADV_HUGEPAGE, as QEMU maps BARs.")
        var noMadvise = false
        @Option(name: .customLong("repeat"), help: ArgumentHelp("Repetitions (1-1000); the median is reported.", valueName: "n"))
        var repetitions: Int = 5
        @OptionGroup var window: BarWindowOptions

        func validate() throws {
            guard (0..<PCIRegion.barCount).contains(bar) else { throw ValidationError("--bar must be 0-\(PCIRegion.barCount - 1), not \(bar)") }
            guard (1...1000).contains(repetitions) else { throw ValidationError("--repeat must be 1-1000, not \(repetitions)") }
            try window.validate(bar: bar)
            guard let value = parseByteCount(skew), value % PageGeometry.pageSize == 0, value < 1 << 40 else {
                throw ValidationError("--skew must be a multiple of 4096 bytes below 1 TiB (decimal, 0x hex, or K/M/G), not \"\(skew)\"")
            }
        }

        func run() throws {
            let target = try parseDeviceAddress(address)
            let skewBytes = parseByteCount(skew) ?? 0
            var mapTimes: [Double] = [], unmapTimes: [Double] = []
            var report: BARDMABenchJSON?
            do throws(VFIOError) {
                let device = try openVFIODevice(target, sysfsRoot: global.resolvedRoot.path)
                guard let container = device.group.container else { throw VFIOError.groupNotAttached(group: device.group.number) }
                let region = try device.regionInfo(PCIRegion.bar(bar))
                var area: SparseArea?
                if window.isSet {
                    do {
                        let (offset, length) = try window.resolve(barSize: region.size)
                        area = SparseArea(offset: offset, size: length)
                    } catch { throw VFIOError.placement(error.message) }
                }
                let options = PlacementOptions(skew: skewBytes, hugePageAdvice: noMadvise ? .none : .hugePage)
                let clock = ContinuousClock()
                for _ in 0..<repetitions {
                    let mapping = try device.mapPlaced(region, area: area, options: options)
                    if touch {
                        let pages = UInt64(mapping.size) / PageGeometry.pageSize
                        _ = try mapping.touchPages(Array(0..<pages))
                    }
                    let t0 = clock.now
                    let dma = try container.mapDMA(mapping)
                    let t1 = clock.now
                    try container.unmapDMA(dma)
                    let t2 = clock.now
                    mapTimes.append(milliseconds(t1 - t0))
                    unmapTimes.append(milliseconds(t2 - t1))
                    if report == nil {
                        report = BARDMABenchJSON(address: target.description, bar: bar, bytes: UInt64(mapping.size), skew: skewBytes,
                                                 virtualOffsetIn1GiB: mapping.virtualStart % PageGeometry.bytes(order: 18),
                                                 iova: dma.iova, touched: touch, advice: mapping.hugePageAdvice.rawValue,
                                                 repetitions: repetitions, mapMilliseconds: 0, unmapMilliseconds: 0)
                    }
                    try mapping.unmap()
                }
            } catch {
                throw CommandFailure("dma bench-bar \(target) BAR \(bar): \(error.description)")
            }
            guard var result = report else { throw CommandFailure("dma bench-bar \(target): nothing was measured") }
            result.mapMilliseconds = median(mapTimes)
            result.unmapMilliseconds = median(unmapTimes)
            if global.json {
                print(try JSONOutput.encode(result))
                return
            }
            print(String(format: "vfioctl bar-dma map_ms=%.3f unmap_ms=%.3f bytes=%llu skew=0x%llx touched=%@ iova=0x%llx va_mod_1g=0x%llx repeat=%d",
                         result.mapMilliseconds, result.unmapMilliseconds, result.bytes, result.skew, touch ? "yes" : "no",
                         result.iova, result.virtualOffsetIn1GiB, repetitions))
        }
    }
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

/// `dma bench-bar --json`.
struct BARDMABenchJSON: Encodable {
    let address: String
    let bar: Int
    let bytes: UInt64
    let skew: UInt64
    let virtualOffsetIn1GiB: UInt64
    let iova: UInt64
    let touched: Bool
    let advice: String
    let repetitions: Int
    var mapMilliseconds: Double
    var unmapMilliseconds: Double
    enum CodingKeys: String, CodingKey {
        case address, bar, bytes, skew, iova, touched, advice, repetitions
        case virtualOffsetIn1GiB = "va_mod_1g", mapMilliseconds = "map_ms", unmapMilliseconds = "unmap_ms"
    }
}
