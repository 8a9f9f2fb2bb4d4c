// The Linux x86 64-bit boot protocol (Documentation/arch/x86/boot.rst): the bzImage's setup
// header, the zero page (boot_params) with the e820 map, the command line and the initramfs,
// and an MP table (Intel MultiProcessor spec 1.4) so the kernel finds its APIC and IOAPIC.
import KVM

/// Guest-physical layout below 1 MiB.
enum Layout {
    static let gdt: UInt64 = 0x500
    static let zeroPage: UInt64 = 0x7000
    static let pageTables: UInt64 = 0x9000          // PML4, PDPT, 4 page directories: 4 GiB
    static let commandLine: UInt64 = 0x2_0000
    static let mpTable: UInt64 = 0xf_0000
    static let kernel: UInt64 = 0x10_0000
    static let lowRAMEnd: UInt64 = 0x9_fc00
}

struct BootError: Error, CustomStringConvertible {
    let description: String
}

func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    (0..<(T.bitWidth / 8)).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
}

func readLE<T: FixedWidthInteger>(_ bytes: [UInt8], _ offset: Int, as: T.Type) -> T {
    (0..<(T.bitWidth / 8)).reduce(T.zero) { $0 | T(bytes[offset + $1]) << (8 * $1) }
}

/// Loads a bzImage and its initramfs into `ram` (at gpa 0) and returns the 64-bit entry point.
func loadLinux(kernel image: [UInt8], initramfs: [UInt8], commandLine: String, ram: GuestMemory) throws -> UInt64 {
    guard image.count > 0x300, readLE(image, 0x202, as: UInt32.self) == 0x5372_6448,   // "HdrS"
          readLE(image, 0x1fe, as: UInt16.self) == 0xaa55 else { throw BootError(description: "not a bzImage (no HdrS setup header)") }
    let version = readLE(image, 0x206, as: UInt16.self)
    guard version >= 0x020c, readLE(image, 0x236, as: UInt16.self) & 1 != 0 else {
        throw BootError(description: "boot protocol \(String(version, radix: 16)) kernel without a 64-bit entry (XLF_KERNEL_64)")
    }
    let setupSectors = image[0x1f1] == 0 ? 4 : Int(image[0x1f1])
    let payload = Array(image[((setupSectors + 1) * 512)...])
    let initSize = UInt64(readLE(image, 0x260, as: UInt32.self))
    let ramSize = UInt64(ram.size)
    guard Layout.kernel + max(UInt64(payload.count), initSize) < ramSize / 2 else { throw BootError(description: "not enough RAM for the kernel") }
    try ram.write(payload, at: Int(Layout.kernel))

    // The initramfs at the top of RAM (below 2 GiB, the 64-bit protocol's initrd_addr_max default).
    let initrdEnd = min(ramSize, 0x8000_0000)
    let initrd = (initrdEnd - UInt64(initramfs.count)) & ~0xfff
    guard initrd > Layout.kernel + initSize else { throw BootError(description: "the initramfs does not fit above the kernel") }
    try ram.write(initramfs, at: Int(initrd))

    let line = Array(commandLine.utf8) + [0]
    guard line.count <= Int(readLE(image, 0x238, as: UInt32.self)) else { throw BootError(description: "command line longer than the kernel takes") }
    try ram.write(line, at: Int(Layout.commandLine))

    // Zero page: the kernel's setup header as it is in the image, then what the loader fills in.
    var zero = [UInt8](repeating: 0, count: 4096)
    let headerEnd = 0x202 + Int(image[0x201])
    zero.replaceSubrange(0x1f1..<headerEnd, with: image[0x1f1..<headerEnd])
    zero.replaceSubrange(0x1fa..<0x1fc, with: le(UInt16(0xffff)))       // vid_mode: normal
    zero[0x210] = 0xff                                                   // type_of_loader: undefined
    zero[0x211] |= 0x01 | 0x80                                           // LOADED_HIGH, CAN_USE_HEAP
    zero.replaceSubrange(0x224..<0x226, with: le(UInt16(0xfe00)))       // heap_end_ptr
    zero.replaceSubrange(0x218..<0x21c, with: le(UInt32(initrd)))       // ramdisk_image
    zero.replaceSubrange(0x21c..<0x220, with: le(UInt32(initramfs.count)))
    zero.replaceSubrange(0x228..<0x22c, with: le(UInt32(Layout.commandLine)))
    // e820: low RAM, the BIOS area (MP table) reserved, RAM from 1 MiB.
    let e820: [(UInt64, UInt64, UInt32)] = [(0, Layout.lowRAMEnd, 1), (Layout.lowRAMEnd, 0x10_0000 - Layout.lowRAMEnd, 2),
                                            (0x10_0000, ramSize - 0x10_0000, 1)]
    zero[0x1e8] = UInt8(e820.count)
    for (index, entry) in e820.enumerated() {
        zero.replaceSubrange(0x2d0 + 20 * index..<0x2d0 + 20 * index + 20, with: le(entry.0) + le(entry.1) + le(entry.2))
    }
    try ram.write(zero, at: Int(Layout.zeroPage))
    try ram.write(mpTable(), at: Int(Layout.mpTable))
    try ram.write(X86LongMode.gdt(), at: Int(Layout.gdt))
    guard let tables = X86LongMode.identityPageTables(at: Layout.pageTables, gigabytes: 4) else { throw BootError(description: "page tables") }
    try ram.write(tables, at: Int(Layout.pageTables))
    return Layout.kernel + 0x200   // startup_64
}

/// One CPU (APIC ID 0), an ISA bus, the IOAPIC at 0xfec00000 with ISA IRQ n on pin n, ExtINT
/// and NMI on the local APIC's LINT0 and LINT1.
func mpTable() -> [UInt8] {
    func checksum(_ bytes: [UInt8]) -> UInt8 { UInt8(truncatingIfNeeded: 0 &- bytes.reduce(0) { $0 &+ Int($1) }) }
    var entries: [UInt8] = []
    entries += [0, 0, 0x14, 0x3] + le(UInt32(0x600)) + le(UInt32(0x201)) + [UInt8](repeating: 0, count: 8)  // processor: BSP, enabled
    entries += [1, 0] + Array("ISA   ".utf8)                                                                  // bus 0
    entries += [2, 1, 0x11, 1] + le(UInt32(0xfec0_0000))                                                     // IOAPIC 1
    for irq in UInt8(0)..<16 { entries += [3, 0, 0, 0, 0, irq, 1, irq] }                                     // ISA IRQ -> pin
    entries += [4, 3, 0, 0, 0, 0, 0, 0]                                                                      // ExtINT -> LINT0
    entries += [4, 1, 0, 0, 0, 0, 0xff, 1]                                                                   // NMI -> LINT1
    var header = Array("PCMP".utf8) + le(UInt16(44 + entries.count)) + [4, 0] + Array("VFIOCTL ".utf8) + Array("VMM-LINUX   ".utf8)
    header += le(UInt32(0)) + le(UInt16(0)) + le(UInt16(2 + 1 + 1 + 16 + 2)) + le(UInt32(0xfee0_0000)) + [0, 0, 0, 0]
    var table = header + entries
    table[7] = checksum(table)
    var pointer = Array("_MP_".utf8) + le(UInt32(Layout.mpTable + 16)) + [1, 4, 0, 0, 0, 0, 0, 0]
    pointer[10] = checksum(pointer)
    return pointer + table
}
