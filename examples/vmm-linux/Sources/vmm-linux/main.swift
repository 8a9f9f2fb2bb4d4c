// vmm-linux: boots an unmodified Linux (bzImage + initramfs) on KVM with a PCI device passed
// through, using vfioctl's library products for everything device-facing: `PassthroughVM` (the
// VFIO container, the in-kernel irqchip, the KVM-VFIO device, guest RAM DMA-mapped at
// IOVA = gpa) and `VFIOPCIDevice` (config space, BARs as memslots where the guest's own PCI code
// puts them, MSI-X and MSI through irqfd). This file holds only what any small VMM has: the boot
// protocol (Boot.swift), a serial console and a conf1 host bridge (Devices.swift), the PIT, and
// the vCPU loop.
//
//   vmm-linux BZIMAGE INITRAMFS [--device BDF] [--memory MIB] [--append CMDLINE] [--timeout SECONDS]
#if canImport(Glibc)
import Glibc
#endif
import KVM
import PCIInventory
import Passthrough
import VFIO

/// One line to standard output (or `descriptor`), unbuffered: the guest's console interleaves
/// with the VMM's own lines in the order they happened, even if the run is killed.
func emit(_ line: String, to descriptor: Int32 = 1) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBufferPointer { write(descriptor, $0.baseAddress, $0.count) }
}

func fail(_ message: String) -> Never {
    emit("vmm-linux: \(message)", to: 2)
    exit(1)
}

func readFile(_ path: String) -> [UInt8] {
    guard let file = fopen(path, "rb") else { fail("cannot open \(path)") }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let count = fread(&chunk, 1, chunk.count, file)
        if count <= 0 { break }
        bytes += chunk[0..<count]
    }
    return bytes
}

var positional: [String] = []
var options: [String: String] = [:]
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    if argument.hasPrefix("--") {
        guard let value = arguments.next() else { fail("\(argument) needs a value") }
        options[argument] = value
    } else {
        positional.append(argument)
    }
}
guard positional.count == 2 else { fail("usage: vmm-linux BZIMAGE INITRAMFS [--device BDF] [--memory MIB] [--append CMDLINE] [--timeout SECONDS]") }
let memoryMiB = Int(options["--memory"] ?? "256") ?? 0
guard (64...2048).contains(memoryMiB) else { fail("--memory must be 64...2048 MiB") }
let commandLine = "console=ttyS0 earlyprintk=serial reboot=k panic=-1 acpi=off pci=conf1 " + (options["--append"] ?? "")
// The timeout interrupts KVM_RUN (EINTR) and the loop stops with a report; the handler does nothing.
signal(SIGALRM) { _ in }
alarm(UInt32(options["--timeout"] ?? "120") ?? 120)

let clock = ContinuousClock()
let start = clock.now
func stamp(_ event: String) {
    let elapsed = (clock.now - start).components
    let ms = elapsed.seconds * 1000 + elapsed.attoseconds / 1_000_000_000_000_000
    emit("vmm-linux: at \(ms) ms: \(event)")
}

do {
    let kvm = try KVMSystem()
    let vm = try kvm.createVM()
    try vm.setX86RealModeAreas()
    // The irqchip comes with the passthrough object (it must precede the vCPU); without a device, alone.
    let passthrough = try options["--device"].map { _ in try PassthroughVM(vm: vm) }
    let irqchip = passthrough == nil ? try InterruptController(vm: vm) : nil
    try vm.createPIT()

    let ramSize = UInt64(memoryMiB) << 20
    let ram = try GuestMemory(size: Int(ramSize))
    try vm.addSlot(MemslotID(slot: 0), guestPhysicalAddress: 0, memory: ram)

    let cpuid = try kvm.supportedCPUID()
    let physicalBits = Int(cpuid.first { $0.function == 0x8000_0008 }.map { $0.eax & 0xff } ?? 36)
    var device: VFIOPCIDevice?
    if let passthrough, let bdf = options["--device"] {
        let rules = GuestBARRules(reservedMemory: [0..<ramSize, 0xfec0_0000..<0x1_0000_0000], addressBits: physicalBits,
                                  reservedPorts: [0..<0x1000])
        device = try VFIOPCIDevice(vm: passthrough, address: try PCIAddress(parsing: bdf), rules: rules,
                                   log: { emit("vmm-linux: device: \($0)") })
    }
    // After the device: its group attached gives the container its IOMMU, which the DMA map needs.
    try passthrough?.mapGuestRAM(ram, guestPhysicalAddress: 0)
    let bus = PCIHostBridge(device: device)
    let serial = Serial()
    serial.onLine = { line in
        if line.contains("l2: nvme driver bound") { stamp("nvme ready") }
        if line.contains("l2: wrote answer") { stamp("token round trip") }
    }

    let entry = try loadLinux(kernel: readFile(positional[0]), initramfs: readFile(positional[1]), commandLine: commandLine, ram: ram)
    let vcpu = try vm.createVCPU()
    try vcpu.setCPUID(cpuid)
    try vcpu.enableLocalAPIC()
    var registers = try vcpu.registers()
    registers.rsi = Layout.zeroPage
    try vcpu.enterLongMode(entry: entry, pageTableRoot: Layout.pageTables, gdtBase: Layout.gdt, registers: registers)
    emit("vmm-linux: \(memoryMiB) MiB, \(device.map { "device \($0.address) at 00:01.0" } ?? "no device"), entry 0x\(String(entry, radix: 16))")

    var exits: [String: Int] = [:]
    var stopped: String?
    while stopped == nil {
        let exit = try vcpu.run()
        switch exit {
        case let .io(port, direction, size, count, data):
            exits["io 0x\(String(port, radix: 16))", default: 0] += 1
            if try device?.serveIO(exit, on: vcpu) == true { continue }
            var input: [UInt8] = []
            for index in 0..<count {
                let bytes = direction == .out ? Array(data[(index * size)..<((index + 1) * size)]) : []
                let value = bytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
                var answer: UInt64 = (1 << UInt64(size * 8)) &- 1
                switch port {
                case Serial.base..<Serial.base + 8:
                    if direction == .out { serial.write(port - Serial.base, UInt8(truncatingIfNeeded: value)) } else { answer = UInt64(serial.read(port - Serial.base)) }
                case PCIHostBridge.addressPort..<PCIHostBridge.dataPort + 4:
                    if direction == .out { bus.write(port, size: size, value: value) } else { answer = bus.read(port, size: size) }
                case 0x71 where direction == .in:
                    answer = 0                       // CMOS/RTC: all registers 0, so never "update in progress"
                case 0x64 where direction == .out && value == 0xfe:
                    stopped = "the guest reset (i8042)"
                default: break
                }
                if direction == .in { input += (0..<size).map { UInt8(truncatingIfNeeded: answer >> (8 * UInt64($0))) } }
            }
            if direction == .in { try vcpu.provideInput(input) }
            if serial.sawPowerOff { stopped = "the guest powered off" }
        case let .mmio(_, isWrite, length, _):
            exits["mmio", default: 0] += 1
            if try device?.serveMMIO(exit, on: vcpu) == true { continue }
            if !isWrite { try vcpu.provideInput([UInt8](repeating: 0xff, count: length)) }
        case .interrupted:
            stopped = "timed out"
        case .shutdown:
            stopped = "the guest shut down (triple fault or reset)"
        case .halt:
            stopped = "the guest halted"
        default:
            let regs = try vcpu.registers(), sregs = try vcpu.specialRegisters()
            if regs.rip < ramSize - 32 { emit("code: " + (try ram.read(at: Int(regs.rip), count: 32)).map { String($0, radix: 16) }.joined(separator: " ")) }
            emit("rax \(String(regs.rax, radix: 16)) rbx \(String(regs.rbx, radix: 16)) rcx \(String(regs.rcx, radix: 16)) rdx \(String(regs.rdx, radix: 16)) rsi \(String(regs.rsi, radix: 16)) rdi \(String(regs.rdi, radix: 16))")
            fail("unexpected exit \(exit) at rip 0x\(String(regs.rip, radix: 16)) rsp 0x\(String(regs.rsp, radix: 16)) cr0 0x\(String(sregs.cr0, radix: 16)) cr3 0x\(String(sregs.cr3, radix: 16)) cr4 0x\(String(sregs.cr4, radix: 16)) efer 0x\(String(sregs.efer, radix: 16))")
        }
    }
    stamp("stopped: \(stopped ?? "")")
    for (bar, slots) in device?.slots ?? [:] {
        for slot in slots { emit("vmm-linux: memslot \(slot.id) gpa 0x\(String(slot.guestPhysicalAddress, radix: 16)) size 0x\(String(slot.size, radix: 16)) BAR \(bar)") }
    }
    device?.detach()
    _ = irqchip
    emit("vmm-linux: exits to userspace: \(exits.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); device exits served \(device?.servedExits ?? 0); config cycles \(bus.cycles)")
    if stopped == "timed out" { fail("timed out at rip 0x\(String(try vcpu.registers().rip, radix: 16))") }
    if let device {
        emit("vmm-linux: device BARs at \(device.model.mapped.sorted { $0.key < $1.key }.map { "BAR \($0.key) 0x\(String($0.value, radix: 16))" }.joined(separator: ", ")); vectors delivered \(device.deliveredGSIs.values.map(\.count).reduce(0, +))")
    }
} catch {
    fail("\(error)")
}
