import ArgumentParser
import PCIInventory
import TextFormat
import VFIO

extension DeviceCommand {
    /// `vfioctl device info`: regions with their capabilities, interrupts with their vector
    /// counts, reset.
    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "info",
            abstract: "Show VFIO's view of a device: regions (mmap areas, MSI-X mappable, type), IRQs with their vector counts, reset; --reset resets it.",
            discussion: """
                Examples:
                  vfioctl device info 0000:01:00.0
                  vfioctl device info 01:00.0 --reset --json
                """
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var options: DeviceInfoOptions

        func run() throws { try options.run(global: global, command: "device info") }
    }
}

extension BAR {
    /// `vfioctl bar info`: kept for scripts; the same as `device info`, with a note on stderr.
    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "info",
            abstract: "Moved to `vfioctl device info` (the same output; this name still works).",
            discussion: """
                Examples:
                  vfioctl bar info 0000:01:00.0
                  vfioctl bar info 01:00.0 --reset --json
                """
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var options: DeviceInfoOptions

        func run() throws {
            note("`bar info` moved to `vfioctl device info` (the same output)")
            try options.run(global: global, command: "bar info")
        }
    }
}

struct DeviceInfoOptions: ParsableArguments {
    @OptionGroup var device: DeviceArgument
    @OptionGroup var backend: BackendOption
    @Flag(name: .long, help: "Also reset the device with VFIO_DEVICE_RESET.")
    var reset = false

    func run(global: GlobalOptions, command: String) throws {
        let target = device.address
        let report: DeviceInfoJSON
        do throws(VFIOError) {
            report = try DeviceInfoJSON.read(target, sysfsRoot: global.resolvedRoot.path, reset: reset, backend: backend)
        } catch {
            throw CommandFailure("\(command) \(target): \(error.description)")
        }
        if global.json {
            print(try JSONOutput.encode(report))
        } else {
            for line in report.textLines() { print(line) }
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
    /// "type1" or "iommufd": how the device was opened.
    let backend: String
    let flags: UInt32
    let supportsReset: Bool
    let regions: [RegionJSON]
    let irqs: [IRQJSON]
    /// "done" or "refused: why" with --reset; null without.
    let reset: String?
    /// The device's resizable BARs (sysfs: the capability and `resourceN_resize`), as `show`
    /// lists them.
    var resizableBARs: [ResizableBAR] = []
    enum CodingKeys: String, CodingKey {
        case address, group, backend, flags, regions, irqs, reset, supportsReset = "supports_reset", resizableBARs = "resizable_bars"
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(address, forKey: .address)
        try container.encode(group, forKey: .group)
        try container.encode(backend, forKey: .backend)
        try container.encode(flags, forKey: .flags)
        try container.encode(supportsReset, forKey: .supportsReset)
        try container.encode(regions, forKey: .regions)
        try container.encode(irqs, forKey: .irqs)
        try container.encode(reset, forKey: .reset)
        try container.encode(resizableBARs.map(JSONValue.resizableBAR), forKey: .resizableBARs)
    }

    /// Opens the device and asks VFIO for every region and IRQ index it has; with `reset`,
    /// resets it (a refusal is reported, not thrown).
    static func read(_ target: PCIAddress, sysfsRoot: String, reset: Bool, backend: BackendOption) throws(VFIOError) -> DeviceInfoJSON {
        let device = try backend.open(target, sysfsRoot: sysfsRoot)
        let regions = try device.regions().map { region in
            RegionJSON(index: region.index, size: region.size, offset: region.offset, flags: region.flags,
                       readable: region.isReadable, writable: region.isWritable, mappable: region.isMappable,
                       sparseAreas: region.capabilities.sparseAreas?.map { AreaJSON(offset: $0.offset, size: $0.size) },
                       mmapAreas: region.mappableAreas.map { AreaJSON(offset: $0.offset, size: $0.size) },
                       msixMappable: region.capabilities.msixMappable,
                       type: region.capabilities.type.map { "\($0.type):\($0.subtype)" })
        }
        let irqs = try device.irqs().map { irq in
            IRQJSON(index: irq.index, name: PCIIRQ.name(irq.index), count: irq.count, eventfd: irq.supportsEventFD,
                    maskable: irq.isMaskable, automasked: irq.isAutomasked)
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
        // Sysfs, not VFIO, says which BARs are resizable; an unreadable tree lists none.
        let resizable = (try? PCIInventory.scan(root: SysfsRoot(path: sysfsRoot), detail: .full))?.device(target)?.resizableBARs ?? []
        return DeviceInfoJSON(address: target.description, group: try device.iommuGroupNumber(),
                              backend: device.backend.rawValue, flags: device.info.flags,
                              supportsReset: device.info.supportsReset, regions: regions, irqs: irqs, reset: resetResult,
                              resizableBARs: resizable)
    }

    func textLines() -> [String] {
        var lines = ["\(address): IOMMU group \(group) (\(backend)), \(regions.count) regions, \(irqs.count) IRQ indexes, reset \(supportsReset ? "supported" : "not supported")"]
        for region in regions where region.size > 0 {
            let access = (region.readable ? "r" : "-") + (region.writable ? "w" : "-") + (region.mappable ? "m" : "-")
            var line = "  region \(region.index): \(byteCount(region.size)) \(access)"
            if let sparse = region.sparseAreas { line += ", sparse mmap: " + sparse.map { "\($0.offset.hex())+\(byteCount($0.size))" }.joined(separator: " ") }
            if region.msixMappable { line += ", MSI-X table mappable" }
            if let type = region.type { line += ", type \(type)" }
            lines.append(line)
        }
        for irq in irqs where irq.count > 0 {
            lines.append("  irq \(irq.name): \(irq.count) vector(s)\(irq.eventfd ? ", eventfd" : "")\(irq.maskable ? ", maskable" : "")")
        }
        lines += resizableBARs.map { "  " + TextFormat.resizableBARLine($0) }
        if let reset { lines.append("reset: \(reset)") }
        return lines
    }
}
