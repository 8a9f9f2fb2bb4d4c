#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import PCIInventory
import TextFormat
import Passthrough
import TestKit
import VFIO
import VfioctlCommands

/// edu's DMA engine through its BAR0 (mapped as for passthrough), polled every millisecond:
/// about 100 ms of virtual time per transfer, so 10 s of wall time under TCG.
private func eduEngine(_ device: VFIODevice) throws(PassthroughError) -> (engine: EduDMAEngine, bar0: VFIOAreaMapping) {
    try requireEdu(device)
    let mapped = try device.mapBarsForPassthrough()
    guard let bar0 = mapped.mappings.first(where: { $0.bar == 0 && $0.offset == 0 }) else {
        throw .invalidBar(bar: 0, reason: "edu's BAR0 could not be mapped")
    }
    return (EduDMAEngine.through(bar0, pause: { usleep(1000) }), bar0)
}
private let eduMaxPolls = 10_000

/// `vfioctl-lab-probe edu-test`: a DMA round trip through the IOMMU with QEMU's edu device, and its MSI.
struct EduTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edu-test",
        abstract: "Round-trip bytes RAM -> device -> RAM through the IOMMU with QEMU's edu test device, and take its MSI on an eventfd.",
        discussion: """
            Example:
              vfioctl-lab-probe edu-test 0000:00:02.0 --json
            """
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var backend: BackendOption
    @Argument(help: ArgumentHelp("An edu device (1234:11e8) bound to vfio-pci.", valueName: "address"))
    var address: DeviceAddress

    func run() throws {
        let target = address.address
        let pattern = (0..<256).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let result: EduJSON
        do {
            let root = global.resolvedRoot.path
            let container = try makeDMASpace(try backend.resolve(target, sysfsRoot: root))
            let device = try container.openDevice(target, sysfsRoot: root, devVFIO: "/dev/vfio")
            let (engine, bar0) = try eduEngine(device)
            let identification = try bar0.load(.dword, at: EduRegisters.identification)
            try device.setBusMaster(true)
            let msi = try device.irqInfo(PCIIRQ.msi)
            let eventFD = try EventFD()
            try device.setIRQTriggers(PCIIRQ.msi, eventFDs: [eventFD])
            let buffer = try DMABuffer(size: 8192, preferHugePages: false)
            try buffer.write(pattern, at: 0)
            let mapping = try container.mapDMA(buffer, limit: EduRegisters.dmaLimit)
            try engine.run(EduDMATransfer(direction: .ramToDevice, iova: mapping.iova, count: UInt64(pattern.count)), maxPolls: eduMaxPolls)
            let interruptsBefore = try eventFD.take() ?? 0
            try engine.run(EduDMATransfer(direction: .deviceToRAM, iova: mapping.iova + 4096, count: UInt64(pattern.count), raiseInterrupt: true),
                           maxPolls: eduMaxPolls)
            let interrupts = try eventFD.wait(milliseconds: 5000)
            let status = try bar0.load(.dword, at: Int(EduRegisters.interruptStatus))
            try bar0.store(status, .dword, at: Int(EduRegisters.interruptAcknowledge))
            let back = try buffer.bytes(at: 4096, count: pattern.count)
            try container.unmapDMA(mapping)
            try device.disableIRQs(PCIIRQ.msi)
            result = EduJSON(address: target.description, identification: String(format: "0x%08llx", identification),
                             iova: mapping.iova, bytes: pattern.count, roundTripMatches: back == pattern,
                             msiVectors: msi.count, msiSignals: interrupts, signalsBeforeIRQRequest: interruptsBefore,
                             interruptStatus: String(format: "0x%llx", status), leftMapped: container.dmaMappings.count)
        } catch {
            throw CommandFailure("edu-test \(target): \(error)")
        }
        if global.json {
            print(try JSONOutput.encode(result))
        } else {
            print("edu \(result.address): id \(result.identification); \(result.bytes) bytes RAM -> device -> RAM via IOVA \(result.iova.hex()): \(result.roundTripMatches ? "match" : "MISMATCH")")
            print("MSI: \(result.msiSignals) signal(s) on the eventfd (interrupt status \(result.interruptStatus)); before requesting one: \(result.signalsBeforeIRQRequest)")
        }
        if !result.roundTripMatches { throw CommandFailure("the bytes that came back differ from those sent") }
    }
}

/// `vfioctl-lab-probe p2p`: another device's BAR mapped into the same container; edu reads it by DMA.
struct PeerToPeerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "p2p",
        abstract: "Map a peer's BAR into the same container as an edu device; edu reads it by DMA (peer-to-peer).",
        discussion: """
            Both devices are opened in one DMA space (type1: one container, each group \
            attached once; iommufd: one IOAS, the peer's BAR mapped as a dma-buf).

            Example:
              vfioctl-lab-probe p2p 0000:00:02.0 --peer 0000:00:03.0 --bar 2 --offset 0x1000
            """
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var backend: BackendOption
    @Argument(help: ArgumentHelp("The edu device that does the DMA.", valueName: "address"))
    var address: DeviceAddress
    @Option(name: .long, help: ArgumentHelp("The peer device whose BAR is mapped.", valueName: "address"))
    var peer: DeviceAddress
    @Option(name: .long, help: ArgumentHelp("The peer's BAR.", valueName: "n"))
    var bar: Int
    @Option(name: .long, help: ArgumentHelp("Byte offset in the BAR that edu reads from (0x hex or decimal).", valueName: "bytes"))
    var offset: ByteOffset = ByteOffset(0x1000)
    @Flag(name: .long, help: "Map the peer BAR's own mapping (a PFNMAP VMA) at IOVA 2 MiB with the space's mapDMA(unsafeAddress:), as a type1 VMM does, instead of mapPeerBAR: iommufd refuses it (EFAULT), and the command fails with that error and how many mappings are left.")
    var mapBarMapping = false

    func validate() throws {
        guard (0..<PCIRegion.barCount).contains(bar) else { throw ValidationError("--bar must be 0-\(PCIRegion.barCount - 1), not \(bar)") }
    }

    func run() throws {
        let target = address.address, peerAddress = peer.address
        let readOffset = offset.value
        let pattern = (0..<256).map { UInt8(truncatingIfNeeded: 0xa5 &+ $0 &* 13) }
        let result: PeerJSON
        do {
            let root = global.resolvedRoot.path
            // One DMA space for both: a container (type1) or an IOAS (iommufd).
            let container = try makeDMASpace(try backend.resolve(target, sysfsRoot: root))
            let edu = try container.openDevice(target, sysfsRoot: root, devVFIO: "/dev/vfio")
            let peerDevice = try container.openDevice(peerAddress, sysfsRoot: root, devVFIO: "/dev/vfio")
            let (engine, _) = try eduEngine(edu)
            try edu.setBusMaster(true)
            let resource = try peerDevice.barResource(bar)
            let peerBar = try peerDevice.mapPlaced(try peerDevice.regionInfo(PCIRegion.bar(bar)))
            for (index, byte) in pattern.enumerated() { try peerBar.store8(byte, at: offset.index + index) }
            let translated = try peerBar.physicalAddress(atOffset: offset.index)
            // 2 MiB alignment keeps the IOVA low enough for edu's 28-bit DMA mask.
            // type1 maps the BAR's PFNMAP mapping; iommufd a dma-buf VFIO exports for it.
            let peerMapping: DMAMapping
            if mapBarMapping {
                do throws(VFIOError) {
                    // Safety: the BAR mapping outlives this DMA mapping: unmapAllDMA runs below
                    // before peerBar.unmap(), and a failed map leaves nothing behind.
                    peerMapping = try unsafe container.mapDMA(unsafeAddress: peerBar.base, size: UInt64(peerBar.size), iova: 2 << 20,
                                                              isDeviceMemory: true, owner: nil, readable: true, writable: true)
                } catch {
                    throw CommandFailure("\(error.description) (mappings left in the DMA space: \(container.dmaMappings.count))")
                }
            } else {
                peerMapping = try container.mapPeerBAR(peerBar, of: peerDevice, alignment: 2 << 20)
            }
            let buffer = try DMABuffer(size: 4096, preferHugePages: false)
            let ramMapping = try container.mapDMA(buffer, limit: EduRegisters.dmaLimit)
            // readOffset lies inside the BAR (the stores above checked it), so inside the mapping.
            let (source, overflow) = peerMapping.iova.addingReportingOverflow(readOffset)
            guard !overflow else { throw VFIOError.placement("IOVA \(peerMapping.iova.hex()) + \(readOffset.hex()) overflows") }
            try engine.run(EduDMATransfer(direction: .ramToDevice, iova: source, count: UInt64(pattern.count)), maxPolls: eduMaxPolls)
            try engine.run(EduDMATransfer(direction: .deviceToRAM, iova: ramMapping.iova, count: UInt64(pattern.count)), maxPolls: eduMaxPolls)
            let back = try buffer.bytes(at: 0, count: pattern.count)
            // IOMMU mappings go before the memory behind them.
            try container.unmapAllDMA()
            result = PeerJSON(address: target.description, peer: peerAddress.description, bar: bar,
                              barStart: resource.start, barSize: resource.size, mappedVirtual: peerBar.virtualStart,
                              peerIOVA: peerMapping.iova, peerMappingSize: peerMapping.size, offset: readOffset,
                              translatedPhysical: translated, barStartTranslated: try peerBar.physicalAddress(atOffset: 0),
                              matches: back == pattern, leftMapped: container.dmaMappings.count)
            try peerBar.unmap()
        } catch {
            throw CommandFailure("p2p \(target) <- \(peerAddress) BAR \(bar): \(error)")
        }
        if global.json {
            print(try JSONOutput.encode(result))
        } else {
            print("peer \(result.peer) BAR \(result.bar): bus \(result.barStart.hex()) (\(byteCount(result.barSize, bytesUnit: "bytes"))), mapped at \(result.mappedVirtual.hex()), IOVA \(result.peerIOVA.hex())")
            print("offset \(result.offset.hex()) is bus address \(result.translatedPhysical.hex()); edu DMA read through the IOMMU: \(result.matches ? "match" : "MISMATCH")")
        }
        if !result.matches { throw CommandFailure("edu read different bytes from the peer's BAR than were written through the mmap") }
    }
}

extension ByteOffset {
    /// The offset as an index into a mapping (vfioctl's ByteOffset stays below 128 TiB).
    var index: Int { Int(value) }
}

struct EduJSON: Encodable {
    let address: String
    let identification: String
    let iova: UInt64
    let bytes: Int
    let roundTripMatches: Bool
    let msiVectors: UInt32
    let msiSignals: UInt64
    let signalsBeforeIRQRequest: UInt64
    let interruptStatus: String
    let leftMapped: Int
    enum CodingKeys: String, CodingKey {
        case address, identification, iova, bytes
        case roundTripMatches = "round_trip_matches", msiVectors = "msi_vectors", msiSignals = "msi_signals"
        case signalsBeforeIRQRequest = "signals_before_irq_request", interruptStatus = "interrupt_status", leftMapped = "left_mapped"
    }
}

struct PeerJSON: Encodable {
    let address: String
    let peer: String
    let bar: Int
    let barStart: UInt64
    let barSize: UInt64
    let mappedVirtual: UInt64
    let peerIOVA: UInt64
    let peerMappingSize: UInt64
    let offset: UInt64
    let translatedPhysical: UInt64
    let barStartTranslated: UInt64
    let matches: Bool
    let leftMapped: Int
    enum CodingKeys: String, CodingKey {
        case address, peer, bar, offset, matches
        case barStart = "bar_start", barSize = "bar_size", mappedVirtual = "mapped_virtual", peerIOVA = "peer_iova"
        case peerMappingSize = "peer_mapping_size", translatedPhysical = "translated_physical"
        case barStartTranslated = "bar_start_translated", leftMapped = "left_mapped"
    }
}
