// Assigns a device bound to vfio-pci to a tiny KVM guest, the way a VMM does, with the VFIO,
// KVM and Passthrough libraries:
//   1. the device's BARs are mapped for huge pages and become memslots, so guest reads of a BAR
//      go straight to the device, with no exit;
//   2. the BAR slots are deleted and re-added while the guest runs: in between, every guest
//      read exits to userspace and is served with a VFIO region read, and the guest never
//      notices (it reads the same value throughout);
//   3. guest RAM is DMA-mapped at IOVA = guest-physical address, and (on QEMU's edu device) the
//      device's DMA engine copies a pattern into guest RAM, which the guest then reads.
//
//   kvm-passthrough ADDRESS [READS]    (as root; /dev/kvm; READS per phase, default 100)
//
// Exit status 0 when every check holds, 1 otherwise.
import Foundation
import KVM
import Passthrough
import PCIInventory
import TestKit
import VFIO

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("kvm-passthrough: \(message)\n".utf8))
    exit(1)
}
func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

let arguments = Array(CommandLine.arguments.dropFirst())
guard let first = arguments.first, let address = try? PCIAddress(parsing: first) else {
    FileHandle.standardError.write(Data("usage: kvm-passthrough ADDRESS [READS]   (ADDRESS like 0000:00:02.0)\n".utf8))
    exit(2)
}
let readsPerPhase = arguments.count > 1 ? Int(arguments[1]) ?? 100 : 100

/// Guest-physical window for BARs: above the guest's RAM, below the APIC and firmware area.
let deviceWindow: Range<UInt64> = 0x1000_0000..<0xfec0_0000
/// Runs the three parts; returns how many checks failed.
func demonstrate() throws(PassthroughError) -> Int {
    var failures = 0
    func check(_ what: String, _ holds: Bool) {
        print("\(holds ? "ok" : "FAIL"): \(what)")
        if !holds { failures += 1 }
    }
    let device: VFIODevice
    let system: KVMSystem
    do { device = try openVFIODevice(address, backend: .auto) } catch { throw .vfio(error) }
    do { system = try KVMSystem() } catch { throw .kvm(error) }

    // 1. BARs as memslots.
    let guest = try ProbeGuest(system: system)
    let mapped = try device.mapBarsForPassthrough()
    guard !mapped.bars.isEmpty else { fail("\(address) has no mmap-able memory BAR") }
    let memslots = try BARMemslots(vm: guest.vm, bars: mapped.bars, window: deviceWindow, reserved: [guest.ramRange],
                                   regions: .vfio(device))
    defer { try? memslots.detach() }
    for bar in memslots.bars {
        for area in bar.areas {
            print("BAR \(bar.bar) +\(hex(area.offset)): \(area.size >> 10) KiB at guest \(hex(area.guestPhysicalAddress)), host \(hex(area.hostAddress))")
        }
    }
    guard let bar = memslots.bars.first, let area = bar.areas.first, let gpa = UInt32(exactly: area.guestPhysicalAddress) else {
        fail("no BAR area below 4 GiB in the guest")
    }
    let hostValue: UInt64
    do { hostValue = try device.read(try device.regionInfo(bar.regionIndex), offset: area.offset, width: .dword) } catch { throw .vfio(error) }

    // 2. One guest run of 3 x READS reads of that register: the slots go away after the first
    // READS reads and come back after the second, while the guest is stopped between reads.
    let run = try guest.readDwords(at: Array(repeating: gpa, count: 3 * readsPerPhase), memslots: memslots) { read throws(PassthroughError) in
        if read == readsPerPhase - 1 { try memslots.setPresent(false) }
        if read == 2 * readsPerPhase - 1 { try memslots.setPresent(true) }
    }
    let exitsByPhase = (0..<3).map { phase in run.readsServedByExit.filter { $0 / readsPerPhase == phase }.count }
    print("guest read BAR \(bar.bar) at \(hex(UInt64(gpa))) \(run.values.count) times in one run; host pread: \(hex(hostValue))")
    print("MMIO exits by phase (slots present, deleted, re-added): \(exitsByPhase.map(String.init).joined(separator: ", "))")
    check("every guest read returned the host's value", run.values.allSatisfy { UInt64($0) == hostValue })
    check("no exits while the BAR slots were present", exitsByPhase[0] == 0 && exitsByPhase[2] == 0)
    check("every read exited (served by VFIO) while they were deleted", exitsByPhase[1] == readsPerPhase)

    // 3. Guest RAM DMA-mapped at IOVA = gpa; edu copies a pattern into it.
    // The container (type1) or the IOAS (iommufd): the same calls either way.
    guard let space = device.dmaSpace else { throw .vfio(.unsupported("\(address) has no DMA space")) }
    let isEdu: Bool
    do { isEdu = try device.readConfig(0, width: .dword) == UInt64(EduRegisters.deviceID) << 16 | UInt64(EduRegisters.vendorID) } catch { throw .vfio(error) }
    let dma = try GuestRAMDMAMapping(space: space, memory: guest.ram, guestPhysicalAddress: 0,
                                     deviceAddressBits: isEdu ? EduRegisters.dmaAddressBits : 64)
    defer { try? dma.unmap() }
    print("guest RAM (\(dma.size >> 20) MiB) DMA-mapped at IOVA \(hex(dma.iova)) = guest-physical \(hex(0))")
    if isEdu, let bar0 = mapped.mappings.first(where: { $0.bar == 0 && $0.offset == 0 }) {
        let source: UInt64 = 0x18_0000, destination: UInt64 = 0x10_0000
        let words = (0..<64).map { UInt32($0) &* 0x0101_0101 ^ 0x5a5a_0000 }
        let bytes = words.flatMap { word in (0..<4).map { UInt8(truncatingIfNeeded: word >> (8 * UInt32($0))) } }
        do {
            try guest.ram.write(bytes, at: Int(source))
            try guest.ram.write([UInt8](repeating: 0, count: bytes.count), at: Int(destination))
        } catch { throw .kvm(error) }
        let command: UInt16
        do {
            command = try device.commandRegister()
            try device.updateCommand(set: PCICommand.memorySpace | PCICommand.busMaster)
        } catch { throw .vfio(error) }
        defer { _ = try? device.writeConfig(UInt64(command), at: PCICommand.offset, width: .word) }
        let engine = EduDMAEngine.through(bar0, pause: { usleep(1000) })
        try engine.run(EduDMATransfer(direction: .ramToDevice, iova: source, count: UInt64(bytes.count)), maxPolls: 5000)
        try engine.run(EduDMATransfer(direction: .deviceToRAM, iova: destination, count: UInt64(bytes.count)), maxPolls: 5000)
        let seen = try guest.readDwords(at: (0..<words.count).map { UInt32(destination) + UInt32($0 * 4) })
        print("edu DMA: guest RAM \(hex(source)) -> device -> guest RAM \(hex(destination)), \(bytes.count) bytes; guest reads \(hex(UInt64(seen.values.first ?? 0)))...")
        check("the guest sees what the device wrote into its RAM", seen.values == words)
    } else {
        print("(the DMA demonstration drives QEMU's edu device; \(address) is not one)")
    }
    return failures
}

let failures: Int
do { failures = try demonstrate() } catch { fail(error.description) }
if failures > 0 { fail("\(failures) check(s) failed") }
print("all checks passed")
