import ArgumentParser
import BARPlacement
import HostKernel
import Foundation
import PCIInventory
import VFIO

/// `vfioctl bar`: register access to a device's BARs through VFIO, the way a VMM would do it:
/// container, group, device fd, region info, then an mmap of the region (pread/pwrite where the
/// region cannot be mapped, e.g. an I/O-port BAR).
public struct Bar: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bar",
        abstract: "Read or write a device's BAR registers through VFIO (the device must be bound to vfio-pci).",
        discussion: """
            The device's IOMMU group must be viable: every member bound to vfio-pci (or to no
            driver). Accesses are single, naturally aligned loads and stores of 1, 2, 4 or 8 bytes
            through an mmap of the BAR.

            `bar plan` shows where vfioctl maps each BAR for huge pages, from sysfs alone;
            `bar touch` maps one there and reads every page.

            Examples:
              vfioctl bar read 0000:00:02.0 --bar 0 --offset 0 --width 4
              vfioctl bar write 00:02.0 --bar 0 --offset 0x4 --width 4 0x12345678
              vfioctl bar plan 00:03.0 --skew 4K
            """,
        subcommands: [Read.self, Write.self, Plan.self, Touch.self, Config.self, Toggle.self, Info.self]
    )
    public init() {}

    /// Options that name one register.
    struct Register: ParsableArguments {
        @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F.", valueName: "address"))
        var address: String

        @Option(name: .long, help: ArgumentHelp("The BAR, 0-5.", valueName: "n"))
        var bar: Int

        @Option(name: .long, help: ArgumentHelp("Byte offset in the BAR, decimal or 0x-prefixed hex.", valueName: "offset"))
        var offset: String = "0"

        @Option(name: .long, help: ArgumentHelp("Access width in bytes: 1, 2, 4 or 8.", valueName: "bytes"))
        var width: Int = 4

        func validate() throws {
            guard (0..<PCIRegion.barCount).contains(bar) else {
                throw ValidationError("--bar must be 0-\(PCIRegion.barCount - 1), not \(bar)")
            }
            guard AccessWidth(rawValue: width) != nil else {
                throw ValidationError("--width must be 1, 2, 4 or 8 (bytes), not \(width)")
            }
            guard let value = parseNumber(offset) else {
                throw ValidationError("--offset \"\(offset)\" is not a decimal or 0x-prefixed hex number")
            }
            if let error = byteCountTooLarge("--offset", value) { throw error }
        }

        /// Values checked by validate().
        func resolved() throws -> (address: PCIAddress, region: UInt32, offset: UInt64, width: AccessWidth) {
            let target = try parseDeviceAddress(address)
            guard let offsetValue = parseNumber(offset), let accessWidth = AccessWidth(rawValue: width) else {
                throw CommandFailure("invalid --offset or --width")
            }
            return (target, PCIRegion.bar(bar), offsetValue, accessWidth)
        }
    }

    struct Read: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "read",
            abstract: "Read one register of a BAR; prints it as 0x-prefixed hex of the access width.",
            discussion: """
                Examples:
                  vfioctl bar read 0000:01:00.0 --bar 0 --offset 0x10 --width 4
                  vfioctl bar read 01:00.0 --bar 2 --width 8 --json
                """
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var register: Register

        func run() throws {
            let (address, regionIndex, offset, width) = try register.resolved()
            let access: BarAccess
            let value: UInt64
            do throws(VFIOError) {
                let device = try openVFIODevice(address, sysfsRoot: global.resolvedRoot.path)
                let region = try device.regionInfo(regionIndex)
                if region.isMappable {
                    let mapping = try device.map(region, writable: false)
                    guard let index = Int(exactly: offset) else {
                        throw VFIOError.outOfRange(offset: offset, width: width.rawValue, size: region.size)
                    }
                    value = try mapping.load(width, at: index)
                    try mapping.unmap()
                    access = .mmap
                } else {
                    note("BAR \(register.bar) of \(address) cannot be mmapped (region flags 0x\(String(region.flags, radix: 16))); reading with pread instead")
                    value = try device.read(region, offset: offset, width: width)
                    access = .pread
                }
            } catch {
                throw CommandFailure("bar read \(address) BAR \(register.bar): \(error.description)")
            }
            try printResult(BarAccessJSON(address: address.description, bar: register.bar, offset: offset,
                                          width: width.rawValue, value: hex(value, width), access: access.rawValue),
                            json: global.json)
        }
    }

    struct Write: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "write",
            abstract: "Write one register of a BAR.",
            discussion: """
                The value comes last, decimal or 0x-prefixed hex, and must fit --width.

                Example:
                  vfioctl bar write 0000:01:00.0 --bar 0 --offset 0x4 --width 4 0x12345678
                """
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var register: Register
        @Argument(help: ArgumentHelp("The value, decimal or 0x-prefixed hex; must fit the width.", valueName: "value"))
        var value: String

        func validate() throws {
            guard let number = parseNumber(value) else {
                throw ValidationError("value \"\(value)\" is not a decimal or 0x-prefixed hex number")
            }
            if let accessWidth = AccessWidth(rawValue: register.width), number & ~accessWidth.mask != 0 {
                throw ValidationError("value \(value) does not fit in \(register.width) bytes")
            }
        }

        func run() throws {
            let (address, regionIndex, offset, width) = try register.resolved()
            guard let number = parseNumber(value) else { throw CommandFailure("invalid value \(value)") }
            let access: BarAccess
            do throws(VFIOError) {
                let device = try openVFIODevice(address, sysfsRoot: global.resolvedRoot.path)
                let region = try device.regionInfo(regionIndex)
                if region.isMappable {
                    let mapping = try device.map(region, writable: true)
                    guard let index = Int(exactly: offset) else {
                        throw VFIOError.outOfRange(offset: offset, width: width.rawValue, size: region.size)
                    }
                    try mapping.store(number, width, at: index)
                    try mapping.unmap()
                    access = .mmap
                } else {
                    note("BAR \(register.bar) of \(address) cannot be mmapped (region flags 0x\(String(region.flags, radix: 16))); writing with pwrite instead")
                    try device.write(number, to: region, offset: offset, width: width)
                    access = .pwrite
                }
            } catch {
                throw CommandFailure("bar write \(address) BAR \(register.bar): \(error.description)")
            }
            if global.json {
                try printResult(BarAccessJSON(address: address.description, bar: register.bar, offset: offset,
                                              width: width.rawValue, value: hex(number, width), access: access.rawValue),
                                json: true)
            }
        }
    }
}

private enum BarAccess: String {
    case mmap, pread, pwrite
}

/// `bar read/write --json`: the value as hex text, since JSON numbers lose 64-bit precision.
private struct BarAccessJSON: Encodable {
    let address: String
    let bar: Int
    let offset: UInt64
    let width: Int
    let value: String
    let access: String
}

private func printResult(_ result: BarAccessJSON, json: Bool) throws {
    if json {
        print(try JSONOutput.encode(result))
    } else {
        print(result.value)
    }
}

/// 0x-prefixed, zero-padded to the access width: 0x010000ed for 4 bytes.
private func hex(_ value: UInt64, _ width: AccessWidth) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, width.rawValue * 2 - digits.count)) + digits
}

/// Decimal, or hex with a 0x prefix.
private func parseNumber(_ text: String) -> UInt64? {
    let lower = text.lowercased()
    if lower.hasPrefix("0x") { return UInt64(lower.dropFirst(2), radix: 16) }
    return UInt64(lower, radix: 10)
}

private func note(_ message: String) {
    FileHandle.standardError.write(Data("note: \(message)\n".utf8))
}


extension Bar {
    /// `vfioctl bar plan`: placement and predicted faults from sysfs alone (no root, no VFIO).
    struct Plan: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "plan",
            abstract: "Show where vfioctl maps each BAR and the page faults and mappings that gives, against naive placements.",
            discussion: """
                Reads the BARs from sysfs `resource` (honours --sysfs-root); needs no root and no
                VFIO. For each memory BAR: vfioctl's alignment (the virtual address is made
                congruent to the bus address modulo the largest page that fits), the fewest
                mappings possible, and, touching every page once in order, the mappings by page
                size and the faults under Linux 6.12's fixed huge-fault rule and the older one,
                for vfioctl's placement, a plain page-aligned mmap, QEMU's "align to size", and
                vfioctl's placement moved by --skew.

                Example:
                  vfioctl bar plan 0000:00:03.0 --bar 2 --skew 0x1000
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F.", valueName: "address"))
        var address: String
        @Option(name: .long, help: ArgumentHelp("Only this BAR, 0-5.", valueName: "n"))
        var bar: Int?
        @Option(name: .long, help: ArgumentHelp("Also plan vfioctl's placement moved by this many bytes (a 4 KiB multiple; 0x hex or K/M/G suffix).", valueName: "bytes"))
        var skew: String?
        @OptionGroup var window: BarWindowOptions
        @OptionGroup var hugeFaultHost: HugeFaultHostOptions

        func validate() throws {
            if let bar, !(0..<PCIRegion.barCount).contains(bar) {
                throw ValidationError("--bar must be 0-\(PCIRegion.barCount - 1), not \(bar)")
            }
            try window.validate(bar: bar)
            if let skew {
                guard let value = parseByteCount(skew) else { throw ValidationError("--skew \"\(skew)\" is not a byte count (decimal, 0x hex, or with K/M/G)") }
                guard value % PageGeometry.pageSize == 0 else { throw ValidationError("--skew must be a multiple of 4096 bytes, not \(value)") }
                if let error = byteCountTooLarge("--skew", value) { throw error }
            }
        }

        func run() throws {
            let target = try parseDeviceAddress(address)
            let inventory = try InventoryLoader.load(global, detail: .summary)
            let device = try InventoryLoader.device(target, in: inventory)
            let skewBytes = skew.flatMap(parseByteCount)
            var bars = device.bars
            if let bar {
                guard let chosen = device.bars.first(where: { $0.index == bar }) else {
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
            var plans: [BarPlanJSON] = []
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
                    let area = try AreaPlan.make(physicalStart: resource.start + offset, length: length, skew: skewBytes, faultGeometry: tried)
                    plans.append(BarPlanJSON(address: target.description, bar: resource, window: (offset, length), plan: area,
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
                return "is smaller than a page or not page aligned (\(byteCount(bar.size)) at 0x\(String(bar.start, radix: 16))): vfio-pci maps it with one 4 KiB page at most"
            }
            return nil
        }
    }
}

/// One BAR's plan, for text and JSON.
struct BarPlanJSON: Encodable {
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
        var lines = ["\(address) BAR \(bar)\(offset == 0 ? "" : " window at +0x\(String(offset, radix: 16))"): 0x\(String(start, radix: 16)), \(byteCount(size))"]
        lines.append("  " + hugeFaults.textLine)
        if hugeFaultsWithoutMadvise != hugeFaults {
            lines.append("  without MADV_HUGEPAGE (QEMU's BAR mappings): " + hugeFaultsWithoutMadvise.textLine)
        }
        lines.append("  placement: virtual address congruent to the bus address modulo \(pageSizeName(alignment)); fewest mappings possible: \(minimumMappingCount) (\(MappingCountJSON.text(minimumMappings)))")
        let header = "  " + pad("placement", 16) + pad("va mod 1 GiB", 14) + pad("mappings", 26) + pad("faults", 9) + "handler calls (order:outcome), fixed kernel"
        lines.append(header)
        for placement in placements {
            lines.append("  " + pad(placement.label, 16) + pad("0x" + String(placement.virtualOffsetIn1GiB, radix: 16), 14)
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

struct MappingCountJSON: Encodable, Equatable {
    let order: Int
    let pageSize: UInt64
    let count: UInt64
    enum CodingKeys: String, CodingKey { case order, count, pageSize = "page_size" }

    static func list(_ counts: [Int: UInt64]) -> [MappingCountJSON] {
        counts.keys.sorted(by: >).map { MappingCountJSON(order: $0, pageSize: PageGeometry.bytes(order: $0), count: counts[$0] ?? 0) }
    }
    static func text(_ list: [MappingCountJSON]) -> String {
        list.map { "\($0.count) x \(pageSizeName($0.pageSize))" }.joined(separator: " + ")
    }
}

struct CallCountJSON: Encodable, Equatable {
    let order: Int
    let outcome: String
    let count: UInt64
}

struct PredictionJSON: Encodable, Equatable {
    let mappings: [MappingCountJSON]
    let mappingCount: UInt64
    let faults: UInt64
    let calls: [CallCountJSON]
    enum CodingKeys: String, CodingKey { case mappings, faults, calls, mappingCount = "mapping_count" }

    init(_ prediction: FaultPrediction) {
        mappings = MappingCountJSON.list(prediction.mappingsByOrder)
        mappingCount = prediction.mappingCount
        faults = prediction.faultingAccesses
        calls = prediction.calls.map { CallCountJSON(order: $0.order, outcome: $0.outcome.rawValue, count: $0.count) }
    }
}

struct VerdictJSON: Encodable, Equatable {
    let order: Int
    let possible: Bool
    let reason: String?
}

struct PlacementJSON: Encodable {
    let label: String
    let strategy: String
    let skew: UInt64
    let virtualOffsetIn1GiB: UInt64
    let fixed: PredictionJSON
    let olderKernel: PredictionJSON
    let reachesMinimum: Bool
    let neverHuge: Bool
    let verdicts: [VerdictJSON]
    enum CodingKeys: String, CodingKey {
        case label, strategy, skew, fixed, verdicts
        case virtualOffsetIn1GiB = "va_mod_1g", olderKernel = "older_kernel", reachesMinimum = "reaches_minimum", neverHuge = "never_huge"
    }

    init(_ placement: PlacementPrediction) {
        label = placement.label
        strategy = placement.strategy.rawValue
        skew = placement.skew
        virtualOffsetIn1GiB = placement.virtualStart % PageGeometry.bytes(order: 18)
        fixed = PredictionJSON(placement.fixed)
        olderKernel = PredictionJSON(placement.unfixed)
        reachesMinimum = placement.reachesMinimum
        neverHuge = placement.neverHuge
        verdicts = placement.verdicts.map { VerdictJSON(order: $0.order, possible: $0.possible, reason: $0.reason) }
    }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text.padding(toLength: width, withPad: " ", startingAt: 0)
}

/// Decimal or 0x hex bytes, optionally with a K, M or G (binary) suffix: 4096, 0x1000, 4K, 2M.
/// `--offset` and `--length`: a window of a BAR, planned or mapped the way a sparse mmap area
/// that starts there would be (vfioctl places every area by its own bus address).
struct BarWindowOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Start of the window in the BAR (4 KiB multiple; 0x hex or K/M/G). Default: 0.", valueName: "bytes"))
    var offset: String?
    @Option(name: .long, help: ArgumentHelp("Length of the window (4 KiB multiple). Default: to the end of the BAR.", valueName: "bytes"))
    var length: String?

    var isSet: Bool { offset != nil || length != nil }

    func validate(bar: Int?) throws {
        guard isSet else { return }
        guard bar != nil else { throw ValidationError("--offset and --length need --bar: they choose a window of one BAR") }
        for (name, text) in [("--offset", offset), ("--length", length)] {
            guard let text else { continue }
            guard let value = parseByteCount(text), value % PageGeometry.pageSize == 0 else {
                throw ValidationError("\(name) must be a multiple of 4096 bytes (decimal, 0x hex, or K/M/G), not \"\(text)\"")
            }
            if name == "--length", value == 0 { throw ValidationError("--length must not be 0") }
            if let error = byteCountTooLarge(name, value) { throw error }
        }
    }

    struct OutOfRange: Error { let message: String }

    /// The window as (offset, length) inside a BAR of `barSize` bytes.
    func resolve(barSize: UInt64) throws(OutOfRange) -> (UInt64, UInt64) {
        let start = offset.flatMap(parseByteCount) ?? 0
        guard start < barSize else {
            throw OutOfRange(message: "--offset 0x\(String(start, radix: 16)) is not inside the BAR (0x\(String(barSize, radix: 16)) bytes)")
        }
        let size = length.flatMap(parseByteCount) ?? (barSize - start)
        guard size <= barSize - start else {
            throw OutOfRange(message: "the window 0x\(String(start, radix: 16))+0x\(String(size, radix: 16)) runs past the end of the BAR (0x\(String(barSize, radix: 16)) bytes)")
        }
        return (start, size)
    }
}

/// The most any byte-count option may ask for: the x86-64 user address space (128 TiB). Skews
/// and sizes beyond it can never be mapped, and bounding them here keeps every sum of a value,
/// a placement and a BAR inside 64 bits.
let largestByteCountOption: UInt64 = 1 << 47

/// Why a byte-count option is refused: nil when `value` is within `largestByteCountOption`.
func byteCountTooLarge(_ name: String, _ value: UInt64) -> ValidationError? {
    value <= largestByteCountOption ? nil
        : ValidationError("\(name) 0x\(String(value, radix: 16)) is larger than the 128 TiB user address space")
}

func parseByteCount(_ text: String) -> UInt64? {
    var body = text.lowercased()
    var multiplier: UInt64 = 1
    if let last = body.last, !body.hasPrefix("0x") || !last.isHexDigit {
        switch last {
        case "k": multiplier = 1 << 10
        case "m": multiplier = 1 << 20
        case "g": multiplier = 1 << 30
        default: break
        }
        if multiplier > 1 { body.removeLast() }
    }
    let value: UInt64?
    if body.hasPrefix("0x") { value = UInt64(body.dropFirst(2), radix: 16) } else { value = UInt64(body, radix: 10) }
    guard let value else { return nil }
    let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
    return overflow ? nil : product
}

extension Bar {
    /// `vfioctl bar touch`: map a BAR through VFIO at vfioctl's placement (plus a skew), read one
    /// byte per page, and report the time beside the planner's predicted faults.
    struct Touch: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "touch",
            abstract: "Map a BAR at vfioctl's placement (plus --skew), read one byte per page, report the time and the predicted faults.",
            discussion: """
                The device must be bound to vfio-pci and its group viable. The mapping is made
                read-only, with the rest of the 1 GiB page-table slots it touches reserved
                (PROT_NONE) while it is in use, so the prediction (Linux 6.12's fault walk, see
                `bar plan`) is exact: the lab compares it with a kprobe count.
                Lines `predicted order=N outcome=inserted|fallback count=N` read like
                Tests/Lab/guest/hugefault-count's.

                Example:
                  vfioctl bar touch 0000:00:03.0 --bar 2 --skew 4K --pattern random
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F.", valueName: "address"))
        var address: String
        @Option(name: .long, help: ArgumentHelp("The BAR, 0-5.", valueName: "n"))
        var bar: Int
        @Option(name: .long, help: ArgumentHelp("Bytes to move the mapping off vfioctl's placement (4 KiB multiple; 0x hex or K/M/G).", valueName: "bytes"))
        var skew: String = "0"
        @Option(name: .long, help: ArgumentHelp("Order of the page reads: linear, reverse or random.", valueName: "pattern"))
        var pattern: String = "linear"
        @Option(name: .long, help: ArgumentHelp("Seed of the random order.", valueName: "n"))
        var seed: UInt64 = 1
        @OptionGroup var window: BarWindowOptions
        @Flag(name: .customLong("no-madvise"), help: "Map without MADV_HUGEPAGE, as QEMU maps BARs (vfioctl's library advises every BAR mapping).")
        var noMadvise = false

        func validate() throws {
            guard (0..<PCIRegion.barCount).contains(bar) else { throw ValidationError("--bar must be 0-\(PCIRegion.barCount - 1), not \(bar)") }
            try window.validate(bar: bar)
            guard let value = parseByteCount(skew), value % PageGeometry.pageSize == 0 else {
                throw ValidationError("--skew must be a multiple of 4096 bytes (decimal, 0x hex, or K/M/G), not \"\(skew)\"")
            }
            if let error = byteCountTooLarge("--skew", value) { throw error }
            guard ["linear", "reverse", "random"].contains(pattern) else { throw ValidationError("--pattern must be linear, reverse or random, not \"\(pattern)\"") }
        }

        func run() throws {
            let target = try parseDeviceAddress(address)
            let access: AccessPattern = pattern == "reverse" ? .reverse : pattern == "random" ? .random(seed: seed) : .linear
            let skewBytes = parseByteCount(skew) ?? 0
            let report: TouchJSON
            do throws(VFIOError) {
                let device = try openVFIODevice(target, sysfsRoot: global.resolvedRoot.path)
                let resource = try device.barResource(bar)
                let region = try device.regionInfo(PCIRegion.bar(bar))
                let area: SparseArea?
                if window.isSet {
                    do {
                        let (offset, length) = try window.resolve(barSize: region.size)
                        area = SparseArea(offset: offset, size: length)
                    } catch { throw VFIOError.placement(error.message) }
                } else {
                    area = nil
                }
                let host: HugeFaultHost
                do { host = try HugeFaultHostReader(sysfsRoot: global.resolvedRoot.path).read() } catch {
                    throw VFIOError.placement(error.description)
                }
                let mapping = try device.mapPlaced(region, area: area, options: PlacementOptions(
                    skew: skewBytes, guardPageTableSlots: true, writable: false, hugePageAdvice: noMadvise ? .none : .hugePage))
                let rule = HugeFaultRuleJSON(host: host, advice: mapping.hugePageAdvice)
                let tried = PageGeometry.tried(under: host.gate(for: mapping.hugePageAdvice))
                let geometry: MappingGeometry
                let pages: PageOrder
                do {
                    geometry = try MappingGeometry(virtualStart: mapping.virtualStart, length: UInt64(mapping.size), physicalStart: resource.start + mapping.regionOffset)
                    pages = try access.order(pageCount: geometry.pageCount)
                } catch {
                    throw VFIOError.placement(error.description)
                }
                let clock = ContinuousClock()
                let began = clock.now
                let checksum = try mapping.touchPages(pages)
                let elapsed = clock.now - began
                let areaOffset = mapping.regionOffset
                try mapping.unmap()
                let prediction: FaultPrediction
                let planned = clock.now
                do { prediction = try FaultPlanner(mapping: geometry, geometry: tried).predict(access) } catch { throw VFIOError.placement(error.description) }
                let planningTime = clock.now - planned
                let minimum = Placement.minimumMappings(physicalStart: geometry.physicalStart, length: geometry.length, geometry: tried)
                report = TouchJSON(address: target.description, bar: bar, pattern: pattern, seed: pattern == "random" ? seed : nil,
                                   skew: skewBytes, offset: areaOffset, virtualStart: geometry.virtualStart, physicalStart: geometry.physicalStart,
                                   size: geometry.length, pages: geometry.pageCount,
                                   milliseconds: Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15,
                                   plannerMilliseconds: Double(planningTime.components.seconds) * 1000 + Double(planningTime.components.attoseconds) / 1e15,
                                   checksum: checksum, predicted: PredictionJSON(prediction),
                                   minimumMappingCount: minimum.values.reduce(0, +), hugeFaults: rule)
            } catch {
                throw CommandFailure("bar touch \(target) BAR \(bar): \(error.description)")
            }
            if global.json {
                print(try JSONOutput.encode(report))
            } else {
                print("touched \(report.pages) pages of \(report.address) BAR \(report.bar)\(report.offset == 0 ? "" : " +0x\(String(report.offset, radix: 16))") (\(byteCount(report.size))) \(report.pattern) in \(String(format: "%.1f", report.milliseconds)) ms")
                print("virtual 0x\(String(report.virtualStart, radix: 16)) (mod 1 GiB 0x\(String(report.virtualStart % (1 << 30), radix: 16))), bus 0x\(String(report.physicalStart, radix: 16)), skew 0x\(String(report.skew, radix: 16))")
                print(report.hugeFaults.textLine)
                print("predicted mappings: \(MappingCountJSON.text(report.predicted.mappings)) (fewest possible: \(report.minimumMappingCount)); faults: \(report.predicted.faults) (planned in \(String(format: "%.1f", report.plannerMilliseconds)) ms)")
                for call in report.predicted.calls { print("predicted order=\(call.order) outcome=\(call.outcome) count=\(call.count)") }
            }
        }
    }
}

/// `bar config --json`.
struct ConfigDumpJSON: Encodable {
    let address: String
    let count: Int
    let hex: String
}

/// `bar toggle --json`: each step's dword (hex), or why the access was refused.
struct ToggleStepJSON: Encodable {
    let step: String
    let value: String?
    let refused: String?
    enum CodingKeys: String, CodingKey { case step, value, refused }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(step, forKey: .step)
        try container.encode(value, forKey: .value)
        try container.encode(refused, forKey: .refused)
    }
}
struct ToggleJSON: Encodable {
    let address: String
    let bar: Int
    let offset: Int
    let steps: [ToggleStepJSON]
}

struct TouchJSON: Encodable {
    let address: String
    let bar: Int
    let pattern: String
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

extension Bar {
    /// `vfioctl bar config`: config space through VFIO's config region.
    struct Config: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "config",
            abstract: "Dump config space read through VFIO's config region (hex bytes, 16 a line).",
            discussion: """
                Example:
                  vfioctl bar config 0000:01:00.0 --count 256
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F.", valueName: "address"))
        var address: String
        @Option(name: .long, help: ArgumentHelp("Bytes to read from offset 0 (a multiple of 4).", valueName: "n"))
        var count: Int = 64

        func validate() throws {
            guard count > 0, count % 4 == 0, count <= 4096 else { throw ValidationError("--count must be a multiple of 4 from 4 to 4096, not \(count)") }
        }

        func run() throws {
            let target = try parseDeviceAddress(address)
            let bytes: [UInt8]
            do throws(VFIOError) {
                let device = try openVFIODevice(target, sysfsRoot: global.resolvedRoot.path)
                bytes = try device.readConfigBytes(count: count)
            } catch {
                throw CommandFailure("bar config \(target): \(error.description)")
            }
            if global.json {
                // One hex string (two digits a byte, in order): compact and easy to slice.
                print(try JSONOutput.encode(ConfigDumpJSON(address: target.description, count: bytes.count,
                                                           hex: bytes.map { String(format: "%02x", $0) }.joined())))
                return
            }
            for line in stride(from: 0, to: bytes.count, by: 16) {
                print(bytes[line..<min(line + 16, bytes.count)].map { String(format: "%02x", $0) }.joined(separator: " "))
            }
        }
    }

    /// `vfioctl bar toggle`: map, unmap and remap a BAR, and switch memory decoding off and on,
    /// showing that a mapping refuses access while decoding is off instead of taking SIGBUS.
    struct Toggle: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "toggle",
            abstract: "Exercise a BAR mapping: read, memory decoding off (access refused), on, unmap, remap, read.",
            discussion: """
                Example:
                  vfioctl bar toggle 0000:01:00.0 --bar 0 --offset 0x10
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F.", valueName: "address"))
        var address: String
        @Option(name: .long, help: ArgumentHelp("The BAR, 0-5.", valueName: "n"))
        var bar: Int
        @Option(name: .long, help: ArgumentHelp("Offset of the dword read each step.", valueName: "offset"))
        var offset: String = "0"

        func validate() throws {
            guard (0..<PCIRegion.barCount).contains(bar) else { throw ValidationError("--bar must be 0-\(PCIRegion.barCount - 1), not \(bar)") }
            guard let value = parseNumber(offset), value <= largestByteCountOption else {
                throw ValidationError("--offset \"\(offset)\" is not a decimal or 0x-prefixed hex number below 128 TiB")
            }
        }

        func run() throws {
            let target = try parseDeviceAddress(address)
            guard let readOffset = parseNumber(offset).flatMap({ Int(exactly: $0) }) else { throw CommandFailure("--offset \(offset) is not a number") }
            var steps: [ToggleStepJSON] = []
            func step(_ name: String, _ value: UInt32?, refused: String? = nil) {
                steps.append(ToggleStepJSON(step: name, value: value.map { hex(UInt64($0), .dword) }, refused: refused))
            }
            do throws(VFIOError) {
                let device = try openVFIODevice(target, sysfsRoot: global.resolvedRoot.path)
                let region = try device.regionInfo(PCIRegion.bar(bar))
                let first = try device.mapPlaced(region)
                step("mapped", try first.load32(at: readOffset))
                try device.setMemoryDecoding(false)
                do throws(VFIOError) {
                    step("decoding-off", try first.load32(at: readOffset))
                } catch {
                    step("decoding-off", nil, refused: error.description)
                }
                try device.setMemoryDecoding(true)
                step("decoding-on", try first.load32(at: readOffset))
                try first.unmap()
                let second = try device.mapPlaced(region)
                step("remapped", try second.load32(at: readOffset))
                try second.unmap()
            } catch {
                throw CommandFailure("bar toggle \(target) BAR \(bar): \(error.description)")
            }
            if global.json {
                print(try JSONOutput.encode(ToggleJSON(address: target.description, bar: bar, offset: readOffset, steps: steps)))
                return
            }
            for entry in steps {
                let label = entry.step.replacingOccurrences(of: "-", with: " ")
                if let refused = entry.refused {
                    print("\(label): refused: \(refused)")
                } else if entry.step == "decoding-off" {
                    print("\(label): read \(entry.value ?? "?") (not refused)")
                } else {
                    print("\(label): \(entry.value ?? "?")")
                }
            }
        }
    }
}

extension Bar {
    /// `vfioctl bar info`: what VFIO says about the device: regions with their capabilities,
    /// interrupts, reset.
    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "info",
            abstract: "Show VFIO's view of a device: regions (mmap areas, MSI-X mappable, type), IRQs, reset; --reset resets it.",
            discussion: """
                Examples:
                  vfioctl bar info 0000:01:00.0
                  vfioctl bar info 01:00.0 --reset --json
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F.", valueName: "address"))
        var address: String
        @Flag(name: .long, help: "Also reset the device with VFIO_DEVICE_RESET.")
        var reset = false

        func run() throws {
            let target = try parseDeviceAddress(address)
            let report: DeviceInfoJSON
            do throws(VFIOError) {
                let device = try openVFIODevice(target, sysfsRoot: global.resolvedRoot.path)
                var regions: [RegionJSON] = []
                for index in 0..<device.info.regionCount {
                    let region: RegionInfo
                    do throws(VFIOError) {
                        region = try device.regionInfo(index)
                    } catch .system(_, .invalidArgument) {
                        // vfio-pci answers EINVAL for a region the device lacks (VGA on a non-VGA device).
                        continue
                    }
                    regions.append(RegionJSON(index: index, size: region.size, offset: region.offset, flags: region.flags,
                                              readable: region.isReadable, writable: region.isWritable, mappable: region.isMappable,
                                              sparseAreas: region.capabilities.sparseAreas?.map { AreaJSON(offset: $0.offset, size: $0.size) },
                                              mmapAreas: region.mappableAreas.map { AreaJSON(offset: $0.offset, size: $0.size) },
                                              msixMappable: region.capabilities.msixMappable,
                                              type: region.capabilities.type.map { "\($0.type):\($0.subtype)" }))
                }
                var irqs: [IRQJSON] = []
                for index in 0..<device.info.irqCount {
                    let irq: IRQInfo
                    do throws(VFIOError) {
                        irq = try device.irqInfo(index)
                    } catch .system(_, .invalidArgument) {
                        // EINVAL: an index the device lacks (ERR on a conventional PCI device).
                        continue
                    }
                    irqs.append(IRQJSON(index: index, name: PCIIRQ.name(index), count: irq.count, eventfd: irq.supportsEventFD,
                                        maskable: irq.isMaskable, automasked: irq.isAutomasked))
                }
                var resetResult: String?
                if reset {
                    do throws(VFIOError) {
                        try device.reset()
                        resetResult = "done"
                    } catch {
                        resetResult = "refused: \(error.description)"
                    }
                }
                report = DeviceInfoJSON(address: target.description, group: device.group.number, flags: device.info.flags,
                                        supportsReset: device.info.supportsReset, regions: regions, irqs: irqs, reset: resetResult)
            } catch {
                throw CommandFailure("bar info \(target): \(error.description)")
            }
            if global.json {
                print(try JSONOutput.encode(report))
                return
            }
            print("\(report.address): IOMMU group \(report.group), \(report.regions.count) regions, \(report.irqs.count) IRQ indexes, reset \(report.supportsReset ? "supported" : "not supported")")
            for region in report.regions where region.size > 0 {
                let access = (region.readable ? "r" : "-") + (region.writable ? "w" : "-") + (region.mappable ? "m" : "-")
                var line = "  region \(region.index): \(byteCount(region.size)) \(access)"
                if let sparse = region.sparseAreas { line += ", sparse mmap: " + sparse.map { "0x\(String($0.offset, radix: 16))+\(byteCount($0.size))" }.joined(separator: " ") }
                if region.msixMappable { line += ", MSI-X table mappable" }
                if let type = region.type { line += ", type \(type)" }
                print(line)
            }
            for irq in report.irqs where irq.count > 0 { print("  irq \(irq.name): \(irq.count) vector(s)\(irq.eventfd ? ", eventfd" : "")\(irq.maskable ? ", maskable" : "")") }
            if let result = report.reset { print("reset: \(result)") }
        }
    }
}

struct AreaJSON: Encodable { let offset: UInt64; let size: UInt64 }

struct RegionJSON: Encodable {
    let index: UInt32
    let size: UInt64
    let offset: UInt64
    let flags: UInt32
    let readable: Bool
    let writable: Bool
    let mappable: Bool
    let sparseAreas: [AreaJSON]?
    let mmapAreas: [AreaJSON]
    let msixMappable: Bool
    let type: String?
    enum CodingKeys: String, CodingKey {
        case index, size, offset, flags, readable, writable, mappable, type
        case sparseAreas = "sparse_areas", mmapAreas = "mmap_areas", msixMappable = "msix_mappable"
    }
}

struct IRQJSON: Encodable {
    let index: UInt32
    let name: String
    let count: UInt32
    let eventfd: Bool
    let maskable: Bool
    let automasked: Bool
}

struct DeviceInfoJSON: Encodable {
    let address: String
    let group: Int
    let flags: UInt32
    let supportsReset: Bool
    let regions: [RegionJSON]
    let irqs: [IRQJSON]
    let reset: String?
    enum CodingKeys: String, CodingKey { case address, group, flags, regions, irqs, reset, supportsReset = "supports_reset" }
}
