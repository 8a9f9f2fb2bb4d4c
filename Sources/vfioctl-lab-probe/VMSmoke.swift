import ArgumentParser
import Foundation
import HostKernel
import KVM
import Passthrough
import PCIInventory
import TextFormat
import TestKit
import VFIO
import VfioctlCommands

/// Guest-physical window the BARs are placed in: above the probe guest's RAM, below the
/// local APIC / IOAPIC / firmware area, all within reach of its 32-bit flat mode.
private let deviceWindow: Range<UInt64> = 0x1000_0000..<0xfec0_0000

/// `vfioctl-lab-probe vm-smoke BDF [--toggle]`: the probe guest reads each BAR through its memslot.
struct VMSmokeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vm-smoke",
        abstract: "Boot a tiny guest with the device's memory BARs as memslots and read a dword from each.",
        discussion: """
            Maps every mmap-able area of the device's memory BARs (placed for huge pages), adds \
            each as a KVM memslot at a guest address congruent to its mapping, and runs a 32-bit \
            guest that reads the first dword of each BAR's first area and reports it with `out`. \
            Each value is compared with a pread of the same register through VFIO.

            With --toggle the guest runs three times: slots present (reads go straight to the \
            device, no MMIO exit), slots deleted (every read exits to vfioctl, which serves it \
            with a VFIO region read), and slots added again.

            The VM is built as a VMM builds one, on the public Passthrough API: one PassthroughVM \
            (its container, in-kernel irqchip and KVM-VFIO device), the device added to it, its \
            BARs added as memslots.

            The device must be bound to vfio-pci (vfioctl bind) and /dev/kvm usable.

            Example:
              vfioctl-lab-probe vm-smoke 0000:00:02.0 --toggle
            """
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var backend: BackendOption
    @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F.", valueName: "address"))
    var address: DeviceAddress
    @Flag(name: .long, help: "Also run with the BAR slots deleted (reads served as MMIO exits), then re-added.")
    var toggle = false

    func run() throws {
        try ProbeVM.check("vm-smoke", address.address, global: global, backend: backend, failure: "the guest read other values than the host") { (probe) throws(PassthroughError) in
            try Self.smoke(probe, toggle: toggle)
        }
    }

    static func smoke(_ probe: ProbeVM, toggle: Bool) throws(PassthroughError) -> SmokeReport {
        let memslots = try probe.device.addBARMemslots(window: deviceWindow)
        guard let mapped = probe.device.barMappings else { throw .invalidBar(bar: 0, reason: "\(probe.address): no BAR mappings after adding its memslots") }
        let regions = RegionAccess.vfio(probe.device.device)
        // One read per BAR: the first dword of its first mapped area.
        var reads: [SmokeReport.Read] = []
        var addresses: [UInt32] = []
        for bar in memslots.bars {
            guard let area = bar.areas.first, let gpa = UInt32(exactly: area.guestPhysicalAddress) else { continue }
            let value = try regions.read(bar.regionIndex, area.offset, .dword)
            reads.append(SmokeReport.Read(bar: bar.bar, offset: area.offset, guest_physical_address: (UInt64(gpa)).hex(),
                                          host_value: value.hex(digits: 8)))
            addresses.append(gpa)
        }
        var phases: [SmokeReport.Phase] = []
        func phase(_ name: String) throws(PassthroughError) {
            let run = try probe.guest.readDwords(at: addresses, memslots: memslots)
            phases.append(SmokeReport.Phase(name: name, slots_present: memslots.isPresent,
                                            values: run.values.map { (UInt64($0)).hex(digits: 8) },
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
        let host = try? HugeFaultHostReader(sysfsRoot: probe.passthrough.sysfsRoot).read()
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
            address: probe.address.description,
            bars: memslots.bars.map { bar in
                SmokeReport.BAR(bar: bar.bar, region_size: bar.regionSize, guest_physical_address: bar.guestPhysicalAddress.hex(),
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

/// `vm-smoke` output; JSON keys are snake_case, addresses and values hex strings.
struct SmokeReport: ProbeReport {
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

        func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(offset, forKey: .offset)
            try container.encode(size, forKey: .size)
            try container.encode(host_address, forKey: .host_address)
            try container.encode(guest_physical_address, forKey: .guest_physical_address)
            try container.encode(huge_page_congruence, forKey: .huge_page_congruence)
            try container.encode(host_page_size, forKey: .host_page_size)
            try container.encode(kvm_page_size, forKey: .kvm_page_size)
            try container.encode(huge_fault_rule, forKey: .huge_fault_rule)
        }
        enum CodingKeys: String, CodingKey {
            case offset, size, host_address, guest_physical_address, huge_page_congruence, host_page_size, kvm_page_size, huge_fault_rule
        }
    }
    struct BAR: Encodable {
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
    let bars: [BAR]
    let skipped: [Skipped]
    let trapped: [Trapped]
    let reads: [Read]
    let phases: [Phase]
    let ok: Bool

    func printText() {
        print("vm-smoke \(address): \(bars.count) BAR\(bars.count == 1 ? "" : "s") as memslots of a 32-bit guest")
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
        for phase in phases {
            let time = String(format: "%.1f us", Double(phase.nanoseconds) / 1000)
            print("  phase \(phase.name): slots \(phase.slots_present ? "present" : "deleted"), \(phase.mmio_exits) MMIO exits, \(phase.io_exits) I/O exits, \(time): \(phase.values.joined(separator: " "))")
        }
        print(ok ? "ok: every phase read the host's values" : "MISMATCH: a phase read other values than the host")
    }
}

/// `vfioctl-lab-probe vm-dma-smoke BDF`: edu DMA into guest RAM at IOVA = gpa.
struct VMDMASmokeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vm-dma-smoke",
        abstract: "DMA a pattern into a tiny guest's RAM through QEMU's edu device (IOVA = guest-physical address).",
        discussion: """
            Maps the guest's 2 MiB of RAM for the device's DMA at IOVA = gpa, enables bus \
            mastering, writes a pattern into guest RAM at gpa 0x180000, and programs edu's DMA \
            engine through its BAR0 mapping to copy it into the device's buffer and back out to \
            gpa 0x100000. The guest reads that range before (zeros) and after (the pattern) and \
            reports every dword. The device's command register is restored afterwards.

            Example:
              vfioctl-lab-probe vm-dma-smoke 0000:00:02.0 --bytes 4092
            """
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var backend: BackendOption
    @Argument(help: ArgumentHelp("An edu device (1234:11e8), DDDD:BB:DD.F or BB:DD.F.", valueName: "address"))
    var address: DeviceAddress
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
        try ProbeVM.check("vm-dma-smoke", address.address, global: global, backend: backend, failure: "the guest did not see the pattern") { (probe) throws(PassthroughError) in
            try Self.smoke(probe, bytes: bytes)
        }
    }

    static func pattern(_ count: Int) -> [UInt32] {
        (0..<count).map { UInt32(truncatingIfNeeded: $0) &* 0x0101_0101 ^ 0xa5c3_0f00 }
    }

    static func smoke(_ probe: ProbeVM, bytes: Int) throws(PassthroughError) -> DMASmokeReport {
        let device = probe.device.device
        let guest = probe.guest
        try requireEdu(device)
        // Guest RAM at IOVA = gpa through the VM's container (budget checked, RAM held), and
        // edu's BAR0 as a memslot; the host drives edu's DMA engine through the same mapping.
        let dma = try probe.passthrough.mapGuestRAM(guest.ram, guestPhysicalAddress: 0, deviceAddressBits: EduRegisters.dmaAddressBits)
        try probe.device.addBARMemslots(window: deviceWindow)
        guard let bar0 = probe.device.barMappings?.mappings.first(where: { $0.bar == 0 && $0.offset == 0 }) else {
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
            address: probe.address.description, identification: identification.hex(digits: 8),
            iova: dma.iova.hex(), iova_size: dma.size, source: sourceAddress.hex(), destination: destinationAddress.hex(),
            bytes: bytes, before_all_zero: beforeRun.values.allSatisfy { $0 == 0 }, transfers: transfers,
            guest_first_words: afterRun.values.prefix(4).map { (UInt64($0)).hex(digits: 8) },
            guest_words_matching: zip(afterRun.values, words).filter { $0 == $1 }.count, words: words.count,
            host_view_matches: hostView == patternBytes, io_exits: beforeRun.ioExits + afterRun.ioExits,
            mmio_exits: beforeRun.mmioExits + afterRun.mmioExits)
    }
}

/// `vm-dma-smoke` output.
struct DMASmokeReport: ProbeReport {
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
        print("vm-dma-smoke \(address) (edu, id \(identification)): guest RAM DMA-mapped at IOVA \(iova) (\(byteCount(iova_size, bytesUnit: "bytes")))")
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
