import ArgumentParser
import Foundation
import HostKernel
import KVM
import Passthrough
import PCIInventory
import TestKit
import TextFormat
import VFIO

/// `vfioctl vm ...`: tiny KVM guests with a passed-through device, to show the composition
/// works: BARs as memslots, the MMIO fallback, DMA into guest RAM.
public struct VMCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "vm",
        abstract: "Hand a device bound to vfio-pci to a real VMM (config), or run tiny KVM guests with it (smoke tests).",
        discussion: """
            The device must be bound to vfio-pci (vfioctl bind) and /dev/kvm usable.

            Examples:
              vfioctl vm smoke 0000:01:00.0 --toggle
              vfioctl vm dma-smoke 0000:00:03.0 --bytes 1024 --json
              vfioctl vm config 0000:01:00.0 --slot --vmm libvirt
            """,
        subcommands: [VMConfigCommand.self, VMSmokeCommand.self, VMDMASmokeCommand.self]
    )
    @OptionGroup var global: GlobalOptions
    public init() {}
}

/// Guest-physical window the BARs are placed in: above the probe guest's RAM, below the
/// local APIC / IOAPIC / firmware area, all within reach of its 32-bit flat mode.
private let deviceWindow: Range<UInt64> = 0x1000_0000..<0xfec0_0000

/// `vfioctl vm smoke BDF [--toggle]`.
struct VMSmokeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "smoke",
        abstract: "Boot a tiny guest with the device's memory BARs as memslots and read a dword from each.",
        discussion: """
            Maps every mmap-able area of the device's memory BARs (placed for huge pages), adds
            each as a KVM memslot at a guest address congruent to its mapping, and runs a 32-bit
            guest that reads the first dword of each BAR's first area and reports it with `out`.
            Each value is compared with a pread of the same register through VFIO.

            With --toggle the guest runs three times: slots present (reads go straight to the
            device, no MMIO exit), slots deleted (every read exits to vfioctl, which serves it
            with a VFIO region read), and slots added again.

            The device must be bound to vfio-pci (vfioctl bind) and /dev/kvm usable.

            Example:
              vfioctl vm smoke 0000:00:02.0 --toggle
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address"))
    var address: PCIAddress
    @Flag(name: .long, help: "Also run with the BAR slots deleted (reads served as MMIO exits), then re-added.")
    var toggle = false

    func run() throws {
        let session = try PassthroughSession.open(address, sysfsRoot: global.resolvedRoot.path)
        let report: SmokeReport
        do throws(PassthroughError) {
            report = try Self.smoke(session, toggle: toggle)
        } catch {
            throw CommandFailure("vm smoke \(session.address): \(error.description)")
        }
        if global.json {
            print(try JSONOutput.encode(report))
        } else {
            report.printText()
        }
        guard report.ok else { throw CommandFailure("vm smoke \(session.address): the guest read other values than the host (see above)") }
    }

    static func smoke(_ session: PassthroughSession, toggle: Bool) throws(PassthroughError) -> SmokeReport {
        let device = session.device
        let mapped = try device.mapBarsForPassthrough()
        guard !mapped.bars.isEmpty else {
            throw .invalidBar(bar: 0, reason: "\(session.address) has no mmap-able memory BAR to pass through (\(mapped.skipped.map { "BAR \($0.bar): \($0.reason)" }.joined(separator: "; ")))")
        }
        let guest = try ProbeGuest(system: session.kvm)
        let regions = RegionAccess.vfio(device)
        let memslots = try BarMemslots(vm: guest.vm, bars: mapped.bars, window: deviceWindow, reserved: [guest.ramRange],
                                       firstSlot: 1, regions: regions)
        defer { try? memslots.detach() }
        // One read per BAR: the first dword of its first mapped area.
        var reads: [SmokeReport.Read] = []
        var addresses: [UInt32] = []
        for bar in memslots.bars {
            guard let area = bar.areas.first, let gpa = UInt32(exactly: area.guestPhysicalAddress) else { continue }
            let value = try regions.read(bar.regionIndex, area.offset, .dword)
            reads.append(SmokeReport.Read(bar: bar.bar, offset: area.offset, guest_physical_address: UInt64(gpa).hex(),
                                          host_value: value.hex(digits: 8)))
            addresses.append(gpa)
        }
        var phases: [SmokeReport.Phase] = []
        func phase(_ name: String) throws(PassthroughError) {
            let run = try guest.readDwords(at: addresses, memslots: memslots)
            phases.append(SmokeReport.Phase(name: name, slots_present: memslots.isPresent,
                                            values: run.values.map { UInt64($0).hex(digits: 8) },
                                            mmio_exits: run.mmioExits, io_exits: run.ioExits, nanoseconds: run.nanoseconds))
        }
        try phase("memslot")
        if toggle {
            try memslots.setPresent(false)
            try phase("mmio")
            try memslots.setPresent(true)
            try phase("memslot-again")
        }
        let expected = reads.map(\.host_value)
        // What the host's fault path does for these mappings (THP mode, madvise, kernel), for
        // the page size KVM can use in each slot; unknown facts are reported as such.
        let host = try? HugeFaultHostReader(sysfsRoot: session.sysfsRoot).read()
        func pages(bar: Int, area: PlacedArea) -> (host: UInt64, kvm: UInt64, rule: String?) {
            let backing = mapped.mappings.first { $0.bar == bar && $0.offset == area.offset }
            let advice = backing?.hugePageAdvice ?? .none
            let tried = host.map { $0.gate(for: advice).allowsHugeFaults } ?? true
            let hostPage = MemslotPageSize.host(hostAddress: area.hostAddress, physicalStart: backing?.physicalStart,
                                                size: area.size, hugeFaultsTried: tried)
            let kvmPage = MemslotPageSize.kvm(hostAddress: area.hostAddress, guestPhysicalAddress: area.guestPhysicalAddress,
                                              size: area.size, hostPage: hostPage)
            return (hostPage, kvmPage, host?.gate(for: advice).rawValue)
        }
        return SmokeReport(
            address: session.address.description,
            bars: memslots.bars.map { bar in
                SmokeReport.Bar(bar: bar.bar, region_size: bar.regionSize, guest_physical_address: bar.guestPhysicalAddress.hex(),
                                areas: bar.areas.map { area in
                                    let sizes = pages(bar: bar.bar, area: area)
                                    return SmokeReport.Area(offset: area.offset, size: area.size, host_address: area.hostAddress.hex(),
                                                            guest_physical_address: area.guestPhysicalAddress.hex(),
                                                            huge_page_congruence: area.hugePageCongruence,
                                                            host_page_size: sizes.host, kvm_page_size: sizes.kvm, huge_fault_rule: sizes.rule)
                                })
            },
            skipped: mapped.skipped.map { SmokeReport.Skipped(bar: $0.bar, reason: $0.reason) },
            trapped: mapped.trapped.flatMap { trap in
                trap.ranges.map { SmokeReport.Trapped(bar: trap.bar, offset: $0.lowerBound, size: $0.upperBound - $0.lowerBound) }
            },
            reads: reads, phases: phases, ok: phases.allSatisfy { $0.values == expected })
    }
}

/// `vm smoke` output; JSON keys are snake_case, addresses and values hex strings.
struct SmokeReport: Encodable {
    struct Area: Encodable {
        let offset: UInt64
        let size: UInt64
        let host_address: String
        let guest_physical_address: String
        let huge_page_congruence: UInt64?
        /// The largest page the host maps the area with (its huge faults under the host's THP
        /// rule), and the largest KVM can then map the slot with.
        let host_page_size: UInt64
        let kvm_page_size: UInt64
        /// The host's huge-fault rule for the mapping (null when the host facts are unreadable).
        let huge_fault_rule: String?

    }
    struct Bar: Encodable {
        let bar: Int
        let region_size: UInt64
        let guest_physical_address: String
        let areas: [Area]
    }
    struct Skipped: Encodable {
        let bar: Int
        let reason: String
    }
    /// BAR pages left out of the memslots (MSI-X table, PBA): guest accesses there exit.
    struct Trapped: Encodable {
        let bar: Int
        let offset: UInt64
        let size: UInt64
    }
    struct Read: Encodable {
        let bar: Int
        let offset: UInt64
        let guest_physical_address: String
        /// The same register read by the host with a VFIO region read (pread).
        let host_value: String
    }
    struct Phase: Encodable {
        let name: String
        let slots_present: Bool
        let values: [String]
        let mmio_exits: Int
        let io_exits: Int
        let nanoseconds: UInt64
    }
    let address: String
    let bars: [Bar]
    let skipped: [Skipped]
    let trapped: [Trapped]
    let reads: [Read]
    let phases: [Phase]
    let ok: Bool

    func printText() {
        print("vm smoke \(address): \(bars.count) BAR\(bars.count == 1 ? "" : "s") as memslots of a 32-bit guest")
        for bar in bars {
            for area in bar.areas {
                let huge = area.huge_page_congruence.map { "congruent mod \(byteCount($0, bytesUnit: "bytes"))" } ?? "no huge page fits"
                let rule = area.huge_fault_rule.map { " [\($0)]" } ?? ""
                print("  BAR \(bar.bar) +\(area.offset.hex()): \(byteCount(area.size, bytesUnit: "bytes")) at gpa \(area.guest_physical_address), host \(area.host_address) (\(huge)); host pages up to \(byteCount(area.host_page_size, bytesUnit: "bytes"))\(rule), KVM maps \(byteCount(area.kvm_page_size, bytesUnit: "bytes"))")
            }
        }
        for skip in skipped { print("  BAR \(skip.bar) skipped: \(skip.reason)") }
        for trap in trapped { print("  BAR \(trap.bar) +\(trap.offset.hex()): \(byteCount(trap.size, bytesUnit: "bytes")) trapped (MSI-X table or PBA: accesses exit, never mapped)") }
        for read in reads { print("  read BAR \(read.bar) +\(read.offset.hex()) at gpa \(read.guest_physical_address); host pread: \(read.host_value)") }
        print(pad("phase", 15) + pad("slots", 9) + pad("MMIO exits", 12) + pad("I/O exits", 11) + pad("time", 12) + "values")
        for phase in phases {
            print(pad(phase.name, 15) + pad(phase.slots_present ? "present" : "deleted", 9) + pad("\(phase.mmio_exits)", 12)
                  + pad("\(phase.io_exits)", 11) + pad(String(format: "%.1f us", Double(phase.nanoseconds) / 1000), 12)
                  + phase.values.joined(separator: " "))
        }
        print(ok ? "ok: every phase read the host's values" : "MISMATCH: a phase read other values than the host")
    }
}

/// `vfioctl vm dma-smoke BDF`: edu DMA into guest RAM at IOVA = gpa.
struct VMDMASmokeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dma-smoke",
        abstract: "DMA a pattern into a tiny guest's RAM through QEMU's edu device (IOVA = guest-physical address).",
        discussion: """
            Maps the guest's 2 MiB of RAM for the device's DMA at IOVA = gpa, enables bus
            mastering, writes a pattern into guest RAM at gpa 0x180000, and programs edu's DMA
            engine through its BAR0 mapping to copy it into the device's buffer and back out to
            gpa 0x100000. The guest reads that range before (zeros) and after (the pattern) and
            reports every dword. The device's command register is restored afterwards.

            Example:
              vfioctl vm dma-smoke 0000:00:02.0 --bytes 4092
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("An edu device (1234:11e8), DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address"))
    var address: PCIAddress
    @Option(name: .long, help: ArgumentHelp("Bytes to transfer: a multiple of 4, at most 4092.", valueName: "n"))
    var bytes: Int = 256

    static let sourceAddress: UInt64 = 0x18_0000
    static let destinationAddress: UInt64 = 0x10_0000

    func validate() throws {
        guard bytes > 0, bytes <= Int(EduRegisters.maxTransfer), bytes % 4 == 0 else {
            throw ValidationError("--bytes must be a multiple of 4 from 4 to \(EduRegisters.maxTransfer / 4 * 4) (edu aborts on a transfer that fills its 4 KiB buffer), not \(bytes)")
        }
    }

    func run() throws {
        let session = try PassthroughSession.open(address, sysfsRoot: global.resolvedRoot.path)
        let report: DMASmokeReport
        do throws(PassthroughError) {
            report = try Self.smoke(session, bytes: bytes)
        } catch {
            throw CommandFailure("vm dma-smoke \(session.address): \(error.description)")
        }
        if global.json {
            print(try JSONOutput.encode(report))
        } else {
            report.printText()
        }
        guard report.ok else { throw CommandFailure("vm dma-smoke \(session.address): the guest did not see the pattern (see above)") }
    }

    static func pattern(_ count: Int) -> [UInt32] {
        (0..<count).map { UInt32(truncatingIfNeeded: $0) &* 0x0101_0101 ^ 0xa5c3_0f00 }
    }

    static func smoke(_ session: PassthroughSession, bytes: Int) throws(PassthroughError) -> DMASmokeReport {
        let device = session.device
        let ids = try viaVFIO { () throws(VFIOError) in try device.readConfig(0, width: .dword) }
        let vendor = UInt16(truncatingIfNeeded: ids), deviceID = UInt16(truncatingIfNeeded: ids >> 16)
        guard vendor == EduRegisters.vendorID, deviceID == EduRegisters.deviceID else {
            throw .dma("dma-smoke drives QEMU's edu DMA engine (1234:11e8); \(session.address) is \(hex4(vendor)):\(hex4(deviceID))")
        }
        guard let container = device.group.container else { throw .vfio(.groupNotAttached(group: device.group.number)) }
        let guest = try ProbeGuest(system: session.kvm)
        let dma = try GuestRAMDMAMapping(container: container, memory: guest.ram, guestPhysicalAddress: 0,
                                         deviceAddressBits: EduRegisters.dmaAddressBits)
        defer { try? dma.unmap() }
        let mapped = try device.mapBarsForPassthrough()
        guard let bar0 = mapped.mappings.first(where: { $0.bar == 0 && $0.offset == 0 }) else {
            throw .invalidBar(bar: 0, reason: "edu's BAR0 could not be mapped")
        }
        let identification = try viaVFIO { () throws(VFIOError) in try bar0.load(.dword, at: EduRegisters.identification) }

        let before = try viaVFIO { () throws(VFIOError) in try device.commandRegister() }
        try viaVFIO { () throws(VFIOError) in try device.updateCommand(set: PCICommand.memorySpace | PCICommand.busMaster) }
        defer { _ = try? viaVFIO { () throws(VFIOError) in try device.writeConfig(UInt64(before), at: PCICommand.offset, width: .word) } }

        let words = pattern(bytes / 4)
        var patternBytes: [UInt8] = []
        for word in words { patternBytes += (0..<4).map { UInt8(truncatingIfNeeded: word >> (8 * UInt32($0))) } }
        try viaKVM { () throws(KVMError) in
            try guest.ram.write(patternBytes, at: Int(sourceAddress))
            try guest.ram.write([UInt8](repeating: 0, count: bytes), at: Int(destinationAddress))
        }
        let addresses = (0..<(bytes / 4)).map { UInt32(destinationAddress) + UInt32($0 * 4) }
        let beforeRun = try guest.readDwords(at: addresses)

        let engine = EduDMAEngine.through(bar0, pause: { usleep(1000) })
        let clock = ContinuousClock()
        var transfers: [DMASmokeReport.Transfer] = []
        for transfer in [EduDMATransfer(direction: .ramToDevice, iova: sourceAddress, count: UInt64(bytes)),
                         EduDMATransfer(direction: .deviceToRAM, iova: destinationAddress, count: UInt64(bytes))] {
            let start = clock.now
            let polls = try engine.run(transfer, maxPolls: 5000)
            let elapsed = clock.now - start
            transfers.append(DMASmokeReport.Transfer(
                direction: transfer.direction == .ramToDevice ? "ram-to-device" : "device-to-ram",
                iova: transfer.iova.hex(), bytes: bytes, polls: polls,
                milliseconds: Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15))
        }
        let afterRun = try guest.readDwords(at: addresses)
        let hostView = try viaKVM { () throws(KVMError) in try guest.ram.read(at: Int(destinationAddress), count: bytes) }
        return DMASmokeReport(
            address: session.address.description, identification: identification.hex(digits: 8),
            iova: dma.iova.hex(), iova_size: dma.size, source: sourceAddress.hex(), destination: destinationAddress.hex(),
            bytes: bytes, before_all_zero: beforeRun.values.allSatisfy { $0 == 0 }, transfers: transfers,
            guest_first_words: afterRun.values.prefix(4).map { UInt64($0).hex(digits: 8) },
            guest_words_matching: zip(afterRun.values, words).filter { $0 == $1 }.count, words: words.count,
            host_view_matches: hostView == patternBytes, io_exits: beforeRun.ioExits + afterRun.ioExits,
            mmio_exits: beforeRun.mmioExits + afterRun.mmioExits)
    }
}

struct DMASmokeReport: Encodable {
    struct Transfer: Encodable {
        let direction: String
        let iova: String
        let bytes: Int
        let polls: Int
        let milliseconds: Double
    }
    let address: String
    let identification: String
    let iova: String
    let iova_size: UInt64
    let source: String
    let destination: String
    let bytes: Int
    let before_all_zero: Bool
    let transfers: [Transfer]
    let guest_first_words: [String]
    let guest_words_matching: Int
    let words: Int
    let host_view_matches: Bool
    let io_exits: Int
    let mmio_exits: Int
    var ok: Bool { before_all_zero && guest_words_matching == words && host_view_matches }

    enum CodingKeys: String, CodingKey {
        case address, identification, iova, iova_size, source, destination, bytes, before_all_zero, transfers
        case guest_first_words, guest_words_matching, words, host_view_matches, io_exits, mmio_exits, ok
    }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(address, forKey: .address)
        try container.encode(identification, forKey: .identification)
        try container.encode(iova, forKey: .iova)
        try container.encode(iova_size, forKey: .iova_size)
        try container.encode(source, forKey: .source)
        try container.encode(destination, forKey: .destination)
        try container.encode(bytes, forKey: .bytes)
        try container.encode(before_all_zero, forKey: .before_all_zero)
        try container.encode(transfers, forKey: .transfers)
        try container.encode(guest_first_words, forKey: .guest_first_words)
        try container.encode(guest_words_matching, forKey: .guest_words_matching)
        try container.encode(words, forKey: .words)
        try container.encode(host_view_matches, forKey: .host_view_matches)
        try container.encode(io_exits, forKey: .io_exits)
        try container.encode(mmio_exits, forKey: .mmio_exits)
        try container.encode(ok, forKey: .ok)
    }

    func printText() {
        print("vm dma-smoke \(address) (edu, id \(identification)): guest RAM DMA-mapped at IOVA \(iova) (\(byteCount(iova_size, bytesUnit: "bytes")))")
        print("  guest read \(words) dwords at gpa \(destination) before DMA: \(before_all_zero ? "all zero" : "NOT zero")")
        for transfer in transfers {
            print("  \(transfer.direction): \(transfer.bytes) bytes, IOVA \(transfer.iova), \(transfer.polls) polls, \(String(format: "%.1f", transfer.milliseconds)) ms")
        }
        print("  guest read after DMA: \(guest_words_matching)/\(words) dwords match the pattern (first: \(guest_first_words.joined(separator: " ")))")
        print("  host view of guest RAM: \(host_view_matches ? "matches" : "DIFFERS")")
        print("  exits: \(io_exits) I/O, \(mmio_exits) MMIO")
        print(ok ? "ok: the device's DMA reached guest RAM at IOVA = gpa" : "FAILED")
    }
}

/// What both commands start from: the device opened through VFIO (bound, group viable) and
/// /dev/kvm, with errors that say what to do.
struct PassthroughSession {
    let address: PCIAddress
    let device: VfioDevice
    let kvm: KVMSystem
    var sysfsRoot: String { device.group.sysfsRoot }

    static func open(_ address: PCIAddress, sysfsRoot: String) throws -> PassthroughSession {
        let deviceDirectory = "\(sysfsRoot)/bus/pci/devices/\(address)"
        guard FileManager.default.fileExists(atPath: deviceDirectory) else {
            throw CommandFailure("no PCI device \(address) (\(deviceDirectory) is missing)")
        }
        let driver = (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(deviceDirectory)/driver"))
            .map { URL(fileURLWithPath: $0).lastPathComponent }
        guard driver == "vfio-pci" else {
            throw CommandFailure("\(address) is \(driver.map { "bound to \($0)" } ?? "bound to no driver"), not vfio-pci; bind it first: vfioctl bind \(address)")
        }
        let kvm: KVMSystem
        do { kvm = try KVMSystem() } catch { throw CommandFailure(error.description) }
        let device: VfioDevice
        do {
            device = try openVFIODevice(address, sysfsRoot: sysfsRoot)
        } catch .groupNotBound {
            throw CommandFailure("\(address) has no VFIO group node; bind it first: vfioctl bind \(address)")
        } catch {
            throw CommandFailure("\(address): \(error.description)")
        }
        return PassthroughSession(address: address, device: device, kvm: kvm)
    }
}

