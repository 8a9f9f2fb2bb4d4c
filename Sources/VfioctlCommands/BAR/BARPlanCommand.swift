import Foundation
import ArgumentParser
import BARPlacement
import HostKernel
import PCIInventory
import TextFormat

extension BAR {
    /// `vfioctl bar plan`: placement and predicted faults from sysfs alone (no root, no VFIO).
    struct Plan: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "plan",
            abstract: "Show where vfioctl maps each BAR and the page faults and mappings that gives, against naive placements.",
            discussion: """
                Reads the BARs from sysfs `resource` (honours --sysfs-root); needs no root and no \
                VFIO. For each memory BAR: vfioctl's alignment (the virtual address is made \
                congruent to the bus address modulo the largest page that fits), the fewest \
                mappings possible, and, touching every page once in order, the mappings by page \
                size and the faults under Linux 6.12's fixed huge-fault rule and the older one, \
                for vfioctl's placement, a plain page-aligned mmap, QEMU's "align to size", and \
                vfioctl's placement moved by --skew.

                Example:
                  vfioctl bar plan 0000:00:03.0 --bar 2 --skew 0x1000
                """
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var device: DeviceArgument
        @Option(name: .long, help: ArgumentHelp("Only this BAR, 0-5.", valueName: "n"))
        var bar: BARIndex?
        @Option(name: .long, help: ArgumentHelp("Also plan vfioctl's placement moved by this many bytes (a multiple of 4096; 0x hex or K/M/G suffix).", valueName: "bytes"))
        var skew: PageMultiple?
        @OptionGroup var window: BARWindowOptions
        @OptionGroup var hugeFaultHost: HugeFaultHostOptions

        func validate() throws { try window.validate(bar: bar) }

        func run() throws {
            let target = device.address
            let inventory = try InventoryLoader.load(global, detail: .summary)
            let device = try InventoryLoader.device(target, in: inventory)
            var bars = device.bars
            if let bar {
                guard let chosen = device.bars.first(where: { $0.index == bar.value }) else {
                    let present = device.bars.map { "\($0.index) (\($0.kind.rawValue))" }.joined(separator: ", ")
                    throw CommandFailure("\(target) has no BAR \(bar) (its BARs: \(present.isEmpty ? "none" : present))")
                }
                if let reason = Self.unplannable(chosen) { throw CommandFailure("\(target) BAR \(bar) \(reason)") }
                bars = [chosen]
            }
            let host = try hugeFaultHost.resolve(sysfsRoot: global.resolvedRoot.path)
            let rule = HugeFaultRuleJSON(host: host, advice: hugeFaultHost.advice)
            let ruleWithoutMadvise = HugeFaultRuleJSON(host: host, advice: .none)
            let tried = PageGeometry.tried(under: host.gate(for: hugeFaultHost.advice))
            var plans: [BARPlanJSON] = []
            for resource in bars {
                if let reason = Self.unplannable(resource) {
                    note("\(target) BAR \(resource.index) \(reason); not planned")
                    continue
                }
                let offset: UInt64, length: UInt64
                do { (offset, length) = try window.resolve(barSize: resource.size) } catch {
                    throw CommandFailure("\(target) BAR \(resource.index): \(error.message)")
                }
                do {
                    let area = try AreaPlan.make(physicalStart: resource.start + offset, length: length, skew: skew?.value, faultGeometry: tried)
                    plans.append(BARPlanJSON(address: target.description, bar: resource, window: (offset, length), plan: area,
                                             hugeFaults: rule, hugeFaultsWithoutMadvise: ruleWithoutMadvise))
                } catch {
                    throw CommandFailure("\(target) BAR \(resource.index): \(error.description)")
                }
            }
            if global.json {
                print(try JSONOutput.encode(plans))
            } else {
                for plan in plans { for line in plan.textLines() { print(line) } }
                if plans.isEmpty { print("\(target) has no memory BAR that can be mmapped") }
            }
        }

        /// Why a BAR cannot be planned (nil when it can).
        static func unplannable(_ bar: PCIBAR) -> String? {
            if bar.index == PCIBAR.romIndex { return "is the expansion ROM" }
            if bar.kind == .io { return "is an I/O-port BAR: it cannot be mmapped" }
            if bar.unassigned { return "has no address assigned by the kernel" }
            if bar.size < PageGeometry.pageSize || bar.start % PageGeometry.pageSize != 0 {
                return "is smaller than a page or not page aligned (\(byteCount(bar.size)) at \(bar.start.hex())): vfio-pci maps it with one 4 KiB page at most"
            }
            return nil
        }
    }
}

/// One BAR's plan, for text and JSON.
struct BARPlanJSON: Encodable {
    let address: String
    let bar: Int
    /// The planned area: the whole BAR, or the window --offset/--length chose.
    let start: UInt64
    let size: UInt64
    /// Where the area starts in the BAR (0 for the whole BAR).
    let offset: UInt64
    let alignment: UInt64
    let minimumMappings: [MappingCountJSON]
    let minimumMappingCount: UInt64
    let placements: [PlacementJSON]
    /// The fault path's rule for the planned mapping (with MADV_HUGEPAGE unless --no-madvise),
    /// and for one without it, as QEMU maps BARs.
    let hugeFaults: HugeFaultRuleJSON
    let hugeFaultsWithoutMadvise: HugeFaultRuleJSON

    enum CodingKeys: String, CodingKey {
        case address, bar, start, size, offset, alignment, placements
        case minimumMappings = "minimum_mappings", minimumMappingCount = "minimum_mapping_count"
        case hugeFaults = "huge_faults", hugeFaultsWithoutMadvise = "huge_faults_without_madvise"
    }

    init(address: String, bar resource: PCIBAR, window: (offset: UInt64, length: UInt64), plan: AreaPlan,
         hugeFaults: HugeFaultRuleJSON, hugeFaultsWithoutMadvise: HugeFaultRuleJSON) {
        self.hugeFaults = hugeFaults
        self.hugeFaultsWithoutMadvise = hugeFaultsWithoutMadvise
        self.address = address
        self.bar = resource.index
        self.start = resource.start + window.offset
        self.size = window.length
        self.offset = window.offset
        self.alignment = plan.alignment
        self.minimumMappings = MappingCountJSON.list(plan.minimumMappings)
        self.minimumMappingCount = plan.minimumMappingCount
        self.placements = plan.placements.map(PlacementJSON.init)
    }

    func textLines() -> [String] {
        var lines = ["\(address) BAR \(bar)\(offset == 0 ? "" : " window at +\(offset.hex())"): \(start.hex()), \(byteCount(size))"]
        lines.append("  " + hugeFaults.textLine)
        if hugeFaultsWithoutMadvise != hugeFaults {
            lines.append("  without MADV_HUGEPAGE (QEMU's BAR mappings): " + hugeFaultsWithoutMadvise.textLine)
        }
        lines.append("  placement: virtual address congruent to the bus address modulo \(pageSizeName(alignment)); fewest mappings possible: \(minimumMappingCount) (\(MappingCountJSON.text(minimumMappings)))")
        let header = "  " + pad("placement", 16) + pad("va mod 1 GiB", 14) + pad("mappings", 26) + pad("faults", 9) + "handler calls (order:outcome), fixed kernel"
        lines.append(header)
        for placement in placements {
            lines.append("  " + pad(placement.label, 16) + pad(placement.virtualOffsetIn1GiB.hex(), 14)
                         + pad(MappingCountJSON.text(placement.fixed.mappings), 26) + pad(String(placement.fixed.faults), 9)
                         + placement.fixed.calls.map { "\($0.order):\($0.outcome) x\($0.count)" }.joined(separator: " "))
        }
        for placement in placements where placement.fixed != placement.olderKernel {
            lines.append("  older kernel (faulting address had to be aligned), \(placement.label): \(MappingCountJSON.text(placement.olderKernel.mappings)), \(placement.olderKernel.faults) faults")
        }
        for placement in placements {
            if placement.reachesMinimum { continue }
            let reasons = placement.verdicts.compactMap { $0.reason }
            let what = placement.neverHuge ? "never gets huge pages" : "misses the minimum"
            lines.append("  note: \(placement.label) \(what)\(reasons.isEmpty ? "" : ": " + reasons.joined(separator: "; "))")
        }
        return lines
    }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text.padding(toLength: width, withPad: " ", startingAt: 0)
}
