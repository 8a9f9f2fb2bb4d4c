import CLinuxUAPI

/// What a 64-bit guest needs in its memory before its first instruction: a GDT with flat code
/// and data descriptors, and page tables identity-mapping low memory with 2 MiB pages. Pure:
/// it returns the bytes; the VMM writes them into guest RAM where it chose.
public enum X86LongMode {
    /// Code selector (GDT entry 2), as the Linux 64-bit boot protocol names it (__BOOT_CS).
    public static let codeSelector: UInt16 = 0x10
    /// Data selector (GDT entry 3, __BOOT_DS).
    public static let dataSelector: UInt16 = 0x18
    /// Page-table bytes per GiB mapped (one page directory), plus PML4 and PDPT pages.
    public static let pageSize = 4096

    /// The GDT: null, null, 64-bit code (execute/read), flat data (read/write). 32 bytes.
    public static func gdt() -> [UInt8] {
        let entries: [UInt64] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff]
        return entries.flatMap { entry in (0..<8).map { UInt8(truncatingIfNeeded: entry >> (8 * UInt64($0))) } }
    }

    /// Page tables that identity-map [0, gigabytes GiB) with 2 MiB pages, meant to be written at
    /// guest-physical `base` (4 KiB aligned): the PML4 at `base`, the PDPT after it, then one
    /// page directory per GiB. `gigabytes` is 1 to 512. Returns nil for arguments out of range.
    public static func identityPageTables(at base: UInt64, gigabytes: Int) -> [UInt8]? {
        guard base % UInt64(pageSize) == 0, (1...512).contains(gigabytes), base < 1 << 52 else { return nil }
        let present: UInt64 = 0x3            // present, writable
        var entries = [UInt64](repeating: 0, count: (2 + gigabytes) * 512)
        entries[0] = (base + UInt64(pageSize)) | present                          // PML4[0] -> PDPT
        for gigabyte in 0..<gigabytes {
            let directory = base + UInt64((2 + gigabyte) * pageSize)
            entries[512 + gigabyte] = directory | present                         // PDPT[g] -> PD
            for slot in 0..<512 {
                let address = UInt64(gigabyte) << 30 | UInt64(slot) << 21
                entries[(2 + gigabyte) * 512 + slot] = address | present | 0x80   // 2 MiB page
            }
        }
        return entries.flatMap { entry in (0..<8).map { UInt8(truncatingIfNeeded: entry >> (8 * UInt64($0))) } }
    }
}

extension VirtualCPU {
    /// x86: start executing 64-bit code at `entry`, paging on through the tables at
    /// `pageTableRoot` (CR3), with the GDT from `X86LongMode.gdt()` at `gdtBase` and CS, DS, ES,
    /// SS loaded from it (their caches set to match, so nothing is read before the guest loads
    /// a segment itself). `registers` gives the general registers (rip and rflags are set here).
    public func enterLongMode(entry: UInt64, pageTableRoot: UInt64, gdtBase: UInt64, registers: kvm_regs = kvm_regs()) throws(KVMError) {
        var sregs = try specialRegisters()
        var code = kvm_segment()
        code.base = 0
        code.limit = 0xffff_ffff
        code.selector = X86LongMode.codeSelector
        code.type = 0xb      // execute/read, accessed
        code.present = 1
        code.s = 1
        code.l = 1           // 64-bit
        code.g = 1
        var data = code
        data.selector = X86LongMode.dataSelector
        data.type = 0x3      // read/write, accessed
        data.l = 0
        data.db = 1
        sregs.cs = code
        for keyPath in [\kvm_sregs.ds, \.es, \.ss, \.fs, \.gs] { sregs[keyPath: keyPath] = data }
        sregs.gdt.base = gdtBase
        sregs.gdt.limit = UInt16(X86LongMode.gdt().count - 1)
        sregs.cr3 = pageTableRoot
        sregs.cr4 |= 1 << 5                          // PAE
        // PE, PG; caches on (CD and NW are set at reset, and some hosts honour them).
        sregs.cr0 = (sregs.cr0 & ~(1 << 30 | 1 << 29)) | 1 | 1 << 31
        sregs.efer |= 1 << 8 | 1 << 10               // LME, LMA
        try setSpecialRegisters(sregs)
        var regs = registers
        regs.rip = entry
        regs.rflags = 0x2
        try setRegisters(regs)
    }
}
