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
                Each repetition maps the BAR (or the --offset/--length window) afresh at vfioctl's \
                placement plus --skew, with MADV_HUGEPAGE unless --no-madvise, reads one byte per \
                page first with --touch, then times VFIO_IOMMU_MAP_DMA and VFIO_IOMMU_UNMAP_DMA of \
                the whole mapping and unmaps it. type1 translates a PFN-mapped VA by walking its \
                page tables (faulting in what is missing); from Linux 6.15 it steps one mapping \
                level at a time, so a BAR mapped with 1 GiB pages maps in a few steps. The median \
                is reported.

                Example:
                  vfioctl dma bench-bar 0000:00:03.0 --bar 2 --length 1G --skew 4K --touch --repeat 5
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("A device bound to vfio-pci; its BAR is mapped into its own container.", valueName: "address"))
        var address: PCIAddress
        @OptionGroup var mapping: BARMappingOptions
        @OptionGroup var backend: BackendOption
        @Flag(name: .long, help: "Read one byte of every page before each DMA map.")
        var touch = false
        @Option(name: .customLong("repeat"), help: ArgumentHelp("Repetitions (1-1000); the median is reported.", valueName: "n"))
        var repetitions: Repetitions = Repetitions(5)

        func run() throws {
            let target = address, bar = mapping.bar, repetitions = repetitions.value
            let skewBytes = mapping.skew.value
            var mapTimes: [Double] = [], unmapTimes: [Double] = []
            var report: BARDMABenchJSON?
            do throws(VFIOError) {
                let device = try backend.open(target, sysfsRoot: global.resolvedRoot.path)
                guard let space = device.dmaSpace else { throw VFIOError.unsupported("\(target) has no DMA space") }
                let region = try device.regionInfo(bar.region)
                let area = try mapping.window.area(barSize: region.size)
                let options = PlacementOptions(skew: skewBytes, hugePageAdvice: mapping.advice)
                let clock = ContinuousClock()
                for _ in 0..<repetitions {
                    let mapping = try device.mapPlaced(region, area: area, options: options)
                    if touch {
                        let pages = UInt64(mapping.size) / PageGeometry.pageSize
                        _ = try mapping.touchPages(Array(0..<pages))
                    }
                    let t0 = clock.now
                    // type1 maps the BAR's PFNMAP mapping; iommufd a dma-buf of the same range.
                    let dma = try space.mapPeerBAR(mapping, of: device)
                    let t1 = clock.now
                    try space.unmapDMA(dma)
                    let t2 = clock.now
                    mapTimes.append(milliseconds(t1 - t0))
                    unmapTimes.append(milliseconds(t2 - t1))
                    if report == nil {
                        report = BARDMABenchJSON(address: target.description, bar: bar.value, bytes: UInt64(mapping.size), skew: skewBytes,
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
