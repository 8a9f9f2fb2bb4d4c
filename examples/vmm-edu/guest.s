.code16
.org 0
main:
  movl $0x1ff, %ds:0xf0
  movl %es:0x3020, %eax
  shll $1, %eax
  addl $0x10, %eax
  movl %eax, %gs:0x00
  movl $0x8040, %gs:0x10
  incl %eax
  movl %eax, %gs:0x00
  movl $0, %gs:0x10
  xorl %esi, %esi
raise_loop:
  cmpl %es:0x3010, %esi
  jae dma
  movl $1, %fs:0x60
  incl %esi
  call wait_for
  jmp raise_loop
dma:
  movl %es:0x3018, %eax
  movl %eax, %fs:0x80
  movl $0x40000, %fs:0x88
  movl %es:0x301c, %eax
  movl %eax, %fs:0x90
  movl $5, %fs:0x98
  incl %esi
  call wait_for
  movl $0x40000, %fs:0x80
  movl %es:0x3014, %eax
  movl %eax, %fs:0x88
  movl %es:0x301c, %eax
  movl %eax, %fs:0x90
  movl $7, %fs:0x98
  incl %esi
  call wait_for
  movl %es:0x3000, %eax
  outl %eax, $0x90
  hlt
wait_for:
  cli
  movl %es:0x3000, %eax
  cmpl %esi, %eax
  jae 1f
  sti
  hlt
  jmp wait_for
1:
  sti
  ret
.org 0x100
handler:
  pushl %eax
  movl %fs:0x24, %eax
  movl %eax, %fs:0x64
  incl %es:0x3000
  movl $0, %ds:0xb0
  popl %eax
  iret
