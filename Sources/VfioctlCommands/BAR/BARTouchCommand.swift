import ArgumentParser
import BARPlacement
import Foundation
import HostKernel
import TextFormat
import VFIO

extension BAR {
    /// `vfioctl bar touch`: map a BAR through VFIO at vfioctl's placement (plus a skew), read one
    /// byte per page, and report the time beside the planner's predicted faults.
    struct Touch: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "touch",
            abstract: "Map a BAR at vfioctl's placement (plus --skew), read one byte per page, report the time and the predicted faults.",
            discussion: """
                The device must be bound to vfio-pci and its group viable. The mapping is made \
                read-only, with the rest of the 1 GiB page-table slots it touches reserved \
                (PROT_NONE) while it is in use, so the prediction (Linux 6.12's fault walk, see \
                `bar plan`) is exact: the lab compares it with a kprobe count. \
                Lines `predicted order=N outcome=inserted|fallback count=N` read like \
                Tests/Lab/guest/hugefault-count's.

                Example:
                  vfioctl bar touch 0000:00:03.0 --bar 2 --skew 4K --pattern random
                """
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var device: DeviceArgument
        @OptionGroup var mapping: BARMappingOptions
        @Option(name: .long, help: ArgumentHelp("Order of the page reads: linear, reverse or random.", valueName: "pattern"))
        var pattern: PatternName = .linear
        @Option(name: .long, help: ArgumentHelp("Seed of the random order.", valueName: "n"))
        var seed: UInt64 = 1

        func run() throws {
            let target = device.address, bar = mapping.bar
            let access = pattern.pattern(seed: seed)
            let skewBytes = mapping.skew.value
            let report: TouchJSON
            do throws(VFIOError) {
                let device = try openVFIODevice(target, sysfsRoot: global.resolvedRoot.path)
                let resource = try device.barResource(bar.value)
                let region = try device.regionInfo(bar.region)
                let area = try mapping.window.area(barSize: region.size)
                let host: HugeFaultHost
                do { host = try HugeFaultHostReader(sysfsRoot: global.resolvedRoot.path).read() } catch {
                    throw VFIOError.placement(error.description)
                }
                let mapped = try device.mapPlaced(region, area: area, options: PlacementOptions(
                    skew: skewBytes, guardPageTableSlots: true, writable: false, hugePageAdvice: mapping.advice))
                let rule = HugeFaultRuleJSON(host: host, advice: mapped.hugePageAdvice)
                let tried = PageGeometry.tried(under: host.gate(for: mapped.hugePageAdvice))
                let geometry: MappingGeometry
                let pages: PageOrder
                do {
                    geometry = try MappingGeometry(virtualStart: mapped.virtualStart, length: UInt64(mapped.size), physicalStart: resource.start + mapped.regionOffset)
                    pages = try access.order(pageCount: geometry.pageCount)
                } catch {
                    throw VFIOError.placement(error.description)
                }
                let clock = ContinuousClock()
                let began = clock.now
                let checksum = try mapped.touchPages(pages)
                let elapsed = clock.now - began
                let areaOffset = mapped.regionOffset
                try mapped.unmap()
                let prediction: FaultPrediction
                let planned = clock.now
                do { prediction = try FaultPlanner(mapping: geometry, geometry: tried).predict(access) } catch { throw VFIOError.placement(error.description) }
                let planningTime = clock.now - planned
                let minimum = Placement.minimumMappings(physicalStart: geometry.physicalStart, length: geometry.length, geometry: tried)
                report = TouchJSON(address: target.description, bar: bar.value, pattern: pattern.rawValue, seed: pattern == .random ? seed : nil,
                                   skew: skewBytes, offset: areaOffset, virtualStart: geometry.virtualStart, physicalStart: geometry.physicalStart,
                                   size: geometry.length, pages: geometry.pageCount,
                                   milliseconds: milliseconds(elapsed), plannerMilliseconds: milliseconds(planningTime),
                                   checksum: checksum, predicted: PredictionJSON(prediction),
                                   minimumMappingCount: minimum.values.reduce(0, +), hugeFaults: rule)
            } catch {
                throw CommandFailure("bar touch \(target) BAR \(bar): \(error.description)")
            }
            if global.json {
                print(try JSONOutput.encode(report))
            } else {
                print("touched \(report.pages) pages of \(report.address) BAR \(report.bar)\(report.offset == 0 ? "" : " +\(report.offset.hex())") (\(byteCount(report.size))) \(report.pattern) in \(String(format: "%.1f", report.milliseconds)) ms")
                print("virtual \(report.virtualStart.hex()) (mod 1 GiB \((report.virtualStart % (1 << 30)).hex())), bus \(report.physicalStart.hex()), skew \(report.skew.hex())")
                print(report.hugeFaults.textLine)
                print("predicted mappings: \(MappingCountJSON.text(report.predicted.mappings)) (fewest possible: \(report.minimumMappingCount)); faults: \(report.predicted.faults) (planned in \(String(format: "%.1f", report.plannerMilliseconds)) ms)")
                for call in report.predicted.calls { print("predicted order=\(call.order) outcome=\(call.outcome) count=\(call.count)") }
            }
        }
    }
}

struct TouchJSON: Encodable {
    let address: String
    let bar: Int
    let pattern: String
    /// The random order's seed; null for linear and reverse.
    let seed: UInt64?
    let skew: UInt64
    /// Where the mapped area starts in the BAR (--offset; 0 for the whole BAR).
    let offset: UInt64
    let virtualStart: UInt64
    let physicalStart: UInt64
    let size: UInt64
    let pages: UInt64
    let milliseconds: Double
    let plannerMilliseconds: Double
    let checksum: UInt64
    let predicted: PredictionJSON
    let minimumMappingCount: UInt64
    /// The fault path's rule for the mapping as made (its madvise) on this host.
    let hugeFaults: HugeFaultRuleJSON
    enum CodingKeys: String, CodingKey {
        case address, bar, pattern, seed, skew, offset, size, pages, milliseconds, checksum, predicted
        case hugeFaults = "huge_faults"
        case virtualStart = "virtual_start", physicalStart = "physical_start", minimumMappingCount = "minimum_mapping_count"
        case plannerMilliseconds = "planner_ms"
    }
}
