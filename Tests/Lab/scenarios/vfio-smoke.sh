# vfio-smoke: real VFIO through the project's own library (Sources/VFIO) via `vfioctl bar`:
# bind edu to vfio-pci by hand, check /dev/vfio/<group> appears, read edu's identification
# register through an mmap of BAR0, write its inverter register and read the inverse back, and
# check access widths and byte order on ivshmem's RAM BAR, the pread fallback on an I/O-port BAR,
# and that a non-viable group is refused with a clear error.
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0
check_eq "$EDU is the edu device" 1234:11e8 "$(dev_id $EDU)"
group=$(dev_group $EDU)
[ -n "$group" ] || fail "$EDU has no IOMMU group"

# Not bound yet: vfioctl must say what to do instead of succeeding.
if out=$(vfioctl bar read $EDU --bar 0 --offset 0 --width 4 2>&1); then
    fail "bar read succeeded on a device not bound to vfio-pci: $out"
else
    echo "$out" | grep -q "vfio-pci" && ok "unbound device refused: $out" || fail "unbound device: unhelpful error: $out"
fi

lab_bind $EDU vfio-pci || fail "could not bind $EDU to vfio-pci"
if wait_for /dev/vfio/$group 5; then ok "/dev/vfio/$group appeared"; else fail "/dev/vfio/$group did not appear"; fi

value=$(vfioctl bar read $EDU --bar 0 --offset 0 --width 4)
check_eq "edu identification register (BAR0 +0x0, via mmap)" 0x010000ed "$value"

json=$(vfioctl bar read $EDU --bar 0 --offset 0 --width 4 --json)
echo "$json" | json_flat >/tmp/read.flat
check_eq "bar read --json value" 0x010000ed "$(json_get /tmp/read.flat .value)"
check_eq "bar read --json access" mmap "$(json_get /tmp/read.flat .access)"

# edu's 0x04 returns the bitwise inverse of what was written: a write through the mapping must
# reach the device, and a read must come back from it (not from a cached copy).
vfioctl bar write $EDU --bar 0 --offset 0x4 --width 4 0x12345678 || fail "bar write exited $?"
check_eq "edu inverter register after writing 0x12345678" 0xedcba987 "$(vfioctl bar read $EDU --bar 0 --offset 4 --width 4)"
vfioctl bar write $EDU --bar 0 --offset 4 --width 4 0 || fail "bar write exited $?"
check_eq "edu inverter register after writing 0" 0xffffffff "$(vfioctl bar read $EDU --bar 0 --offset 4 --width 4)"

# Bad requests fail with a message, not a crash.
out=$(vfioctl bar read $EDU --bar 0 --offset 0x100000 --width 4 2>&1) && fail "read past the 1 MiB BAR succeeded: $out" \
    || { echo "$out" | grep -q "outside" && ok "read past the BAR refused: $out" || fail "read past the BAR: unexpected error: $out"; }
out=$(vfioctl bar read $EDU --bar 0 --offset 2 --width 4 2>&1) && fail "misaligned read succeeded: $out" \
    || { echo "$out" | grep -q "aligned" && ok "misaligned read refused: $out" || fail "misaligned read: unexpected error: $out"; }

# Widths and byte order: edu's registers take 4/8-byte accesses only, so use ivshmem's BAR2 (RAM).
IVSHMEM=0000:00:03.0
lab_bind $IVSHMEM vfio-pci || fail "could not bind $IVSHMEM to vfio-pci"
vfioctl bar write $IVSHMEM --bar 2 --offset 0x1000 --width 8 0x1122334455667788 || fail "qword write exited $?"
check_eq "ivshmem qword read back" 0x1122334455667788 "$(vfioctl bar read $IVSHMEM --bar 2 --offset 0x1000 --width 8)"
check_eq "ivshmem byte 0 (little-endian)" 0x88 "$(vfioctl bar read $IVSHMEM --bar 2 --offset 0x1000 --width 1)"
check_eq "ivshmem word at +2" 0x5566 "$(vfioctl bar read $IVSHMEM --bar 2 --offset 0x1002 --width 2)"
check_eq "ivshmem dword at +4" 0x11223344 "$(vfioctl bar read $IVSHMEM --bar 2 --offset 0x1004 --width 4)"
vfioctl bar write $IVSHMEM --bar 2 --offset 0x1001 --width 1 0xab || fail "byte write exited $?"
check_eq "ivshmem qword after a byte write at +1" 0x112233445566ab88 "$(vfioctl bar read $IVSHMEM --bar 2 --offset 0x1000 --width 8)"
out=$(vfioctl bar write $IVSHMEM --bar 2 --offset 0 --width 1 0x100 2>&1) && fail "a value wider than the access was written: $out" \
    || ok "a value wider than the access refused: $out"

# The second edu sits behind the bridge with e1000, which keeps its host driver: the group is
# not viable, and VFIO must refuse it even though edu itself is bound to vfio-pci.
EDU2=0000:01:02.0
lab_bind $EDU2 vfio-pci || fail "could not bind $EDU2 to vfio-pci"
out=$(vfioctl bar read $EDU2 --bar 0 --offset 0 --width 4 2>&1) && fail "bar read in a non-viable group succeeded: $out" \
    || { echo "$out" | grep -q "not viable" && ok "non-viable group refused: $out" || fail "non-viable group: unexpected error: $out"; }
# Once e1000 is on vfio-pci too, the group is viable and the second edu answers.
lab_bind 0000:01:01.0 vfio-pci || fail "could not bind 0000:01:01.0 to vfio-pci"
check_eq "second edu's identification register once its group is viable" 0x010000ed \
    "$(vfioctl bar read $EDU2 --bar 0 --offset 0 --width 4)"

# e1000's BAR1 is I/O ports, which VFIO cannot mmap: bar read falls back to pread and says so.
E1000=0000:01:01.0
if out=$(vfioctl bar read $E1000 --bar 1 --offset 0 --width 4 --json 2>/tmp/io.err); then
    echo "$out" | json_flat >/tmp/io.flat
    check_eq "e1000 I/O BAR read access" pread "$(json_get /tmp/io.flat .access)"
    grep -q "cannot be mmapped" /tmp/io.err && ok "the fallback was noted: $(cat /tmp/io.err)" || fail "no note about the pread fallback: $(cat /tmp/io.err)"
else
    fail "e1000 I/O BAR read failed: $(cat /tmp/io.err)"
fi
lab_finish
