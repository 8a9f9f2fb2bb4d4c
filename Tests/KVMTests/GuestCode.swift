@testable import KVM

/// Guest programs, as machine code with the assembly they came from (GNU as, `.code16`,
/// checked with `objdump -d -M i8086`). They run in real mode at 0000:1000.
enum GuestCode {
    static let loadAddress: UInt16 = 0x1000

    /// Port and MMIO exits in a known order, then hlt.
    static let exits: [UInt8] = [
        0xba, 0xf8, 0x03,              // mov dx, 0x3f8
        0xb0, 0x42,                    // mov al, 0x42
        0xee,                          // out dx, al            -> io out 0x3f8, 1 byte, 42
        0xb8, 0x34, 0x12,              // mov ax, 0x1234
        0xe7, 0x80,                    // out 0x80, ax          -> io out 0x80, 2 bytes, 34 12
        0xe4, 0x61,                    // in al, 0x61           -> io in 0x61, 1 byte (host answers)
        0xe6, 0x81,                    // out 0x81, al          -> echoes the answer
        0xbb, 0x00, 0x20,              // mov bx, 0x2000
        0x8e, 0xdb,                    // mov ds, bx
        0xc6, 0x06, 0x10, 0x00, 0x77,  // mov byte [0x10], 0x77 -> mmio write 0x20010, 77
        0xa0, 0x11, 0x00,              // mov al, [0x11]        -> mmio read 0x20011 (host answers)
        0xe6, 0x82,                    // out 0x82, al          -> echoes it
        0xf4,                          // hlt
    ]

    /// Reads words from a 64 KiB fake BAR at gpa 0x80000 forever, reporting each one:
    /// offsets 0, 0x102, 0x204, ... (mod 64 KiB), so reads move across all 16 pages.
    static let barGuestPhysicalAddress: UInt64 = 0x80000
    static let barReportPort: UInt16 = 0x90
    static let barStride: UInt16 = 0x102
    static let readBARForever: [UInt8] = [
        0xb8, 0x00, 0x80,              // mov ax, 0x8000
        0x8e, 0xd8,                    // mov ds, ax
        0x31, 0xf6,                    // xor si, si
        0x8b, 0x04,                    // next: mov ax, [si]      -> direct, or mmio read (host answers)
        0xe7, 0x90,                    // out 0x90, ax            -> io out 0x90, 2 bytes: the word read
        0x81, 0xc6, 0x02, 0x01,        // add si, 0x102
        0xeb, 0xf6,                    // jmp next
    ]

    /// Writes one byte at the start of each page whose segment is in a table after the code:
    ///       mov si, table ; mov cx, count
    ///   next: lodsw ; mov es, ax ; mov byte [es:0], 1 ; loop next
    ///       hlt
    ///   table: dw segment, ...
    /// With `exitAfterEach`, `out 0x99, al` follows each write (loop body + 2 bytes), so the vCPU
    /// leaves and re-enters KVM after every page, as a guest that talks to devices does.
    static let progressPort: UInt16 = 0x99
    static func writePages(_ guestPhysicalAddresses: [UInt64], exitAfterEach: Bool = false) -> [UInt8] {
        let tableAddress = UInt16(loadAddress) + (exitAfterEach ? 20 : 18)
        let count = UInt16(guestPhysicalAddresses.count)
        var code: [UInt8] = [
            0xbe, UInt8(tableAddress & 0xff), UInt8(tableAddress >> 8),  // mov si, table
            0xb9, UInt8(count & 0xff), UInt8(count >> 8),                // mov cx, count
            0xad,                                                        // next: lodsw
            0x8e, 0xc0,                                                  // mov es, ax
            0x26, 0xc6, 0x06, 0x00, 0x00, 0x01,                          // mov byte [es:0], 1
        ]
        if exitAfterEach {
            code += [0xe6, UInt8(progressPort)]                          // out 0x99, al
            code += [0xe2, 0xf3]                                         // loop next
        } else {
            code += [0xe2, 0xf5]                                         // loop next
        }
        code += [0xf4]                                                   // hlt
        for address in guestPhysicalAddresses {
            let segment = UInt16(address >> 4)                           // page-aligned, below 1 MiB
            code += [UInt8(segment & 0xff), UInt8(segment >> 8)]
        }
        return code
    }
}
