import CLinuxUAPI

/// Guest programs shared by the tests and the benchmark, as machine code with the assembly they
/// came from (GNU as, checked with `objdump -d`).
public enum GuestPrograms {
    /// Where `pageWriter32` expects to be loaded and entered.
    public static let pageWriterEntry: UInt32 = 0x1000
    /// `out` port after each chunk of pages, and after each whole round.
    public static let chunkDonePort: UInt16 = 0x98
    public static let roundDonePort: UInt16 = 0x99

    /// 32-bit flat protected mode (`VirtualCPU.enterFlatProtectedMode`). Each round writes one
    /// byte to `pages` addresses, `stride` apart from `first`; after every `pagesPerChunk` of
    /// them it exits with `out 0x98` (so a dirty ring can be harvested before it fills: on a
    /// host where KVM emulates this code it checks the ring's soft limit only on entry), and
    /// after the round with `out 0x99`; then it starts the next round. Registers: ebx = first,
    /// edx = pages (> 0), ebp = stride, esi = pagesPerChunk (> 0).
    ///   round: mov edi, ebx ; mov ecx, edx
    ///   chunk: mov eax, esi
    ///   next:  mov byte [edi], 1 ; add edi, ebp ; dec ecx ; jz done ; dec eax ; jnz next
    ///          out 0x98, al ; jmp chunk
    ///   done:  out 0x99, al ; jmp round
    public static let pageWriter32: [UInt8] = [
        0x89, 0xdf,        // 00 round: mov %ebx,%edi
        0x89, 0xd1,        // 02        mov %edx,%ecx
        0x89, 0xf0,        // 04 chunk: mov %esi,%eax
        0xc6, 0x07, 0x01,  // 06 next:  movb $0x1,(%edi)
        0x01, 0xef,        // 09        add %ebp,%edi
        0x49,              // 0b        dec %ecx
        0x74, 0x07,        // 0c        je 15 <done>
        0x48,              // 0e        dec %eax
        0x75, 0xf5,        // 0f        jne 6 <next>
        0xe6, 0x98,        // 11        out %al,$0x98
        0xeb, 0xef,        // 13        jmp 4 <chunk>
        0xe6, 0x99,        // 15 done:  out %al,$0x99
        0xeb, 0xe7,        // 17        jmp 0 <round>
    ]

    /// The registers `pageWriter32` reads its parameters from.
    public static func pageWriterRegisters(first: UInt32, pages: UInt32, stride: UInt32, pagesPerChunk: UInt32) -> kvm_regs {
        var regs = kvm_regs()
        regs.rbx = UInt64(first)
        regs.rdx = UInt64(max(pages, 1))
        regs.rbp = UInt64(stride)
        regs.rsi = UInt64(max(pagesPerChunk, 1))
        return regs
    }
}
