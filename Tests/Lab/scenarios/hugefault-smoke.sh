# hugefault-smoke: the huge-fault counter (/lab/bin/hugefault-count) counts vfio-pci's mmap
# faults exactly. Reading one register of edu's 1 MiB BAR0 through `vfioctl bar read` (one mmap,
# one access) inserts exactly one page, at order 0; before that the kernel may try a PMD (order
# 9) fault that falls back, depending on where the mapping lands, so fallbacks are allowed but
# only at higher orders. Two reads insert two pages. Reading ivshmem's 2 GiB BAR2 inserts exactly
# one mapping, at order 0, 9 (PMD) or 18 (PUD).
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0 IVSHMEM=0000:00:03.0
lab_bind $EDU vfio-pci || fail "could not bind $EDU to vfio-pci"
lab_bind $IVSHMEM vfio-pci || fail "could not bind $IVSHMEM to vfio-pci"

hugefault-count vfioctl bar read $EDU --bar 0 --offset 0 --width 4 >/tmp/hf1 || fail "hugefault-count exited $?"
cat /tmp/hf1
check_eq "edu value read under the counter" 0x010000ed "$(head -n 1 /tmp/hf1)"
check_eq "inserts for one edu read" "hugefault order=0 ret=256 outcome=inserted count=1" "$(grep '^hugefault order=.*outcome=inserted' /tmp/hf1)"
check_eq "fallbacks only above order 0" "" "$(grep '^hugefault order=0 .*outcome=fallback' /tmp/hf1)"
check_eq "nothing else for one edu read" "inserted=1 other=0 dropped=0" "$(sed -n 's/^hugefault total=[0-9]* \(inserted=[0-9]*\) fallback=[0-9]* \(other=.*\)/\1 \2/p' /tmp/hf1)"

hugefault-count -q sh -c "vfioctl bar read $EDU --bar 0 --offset 0 --width 4 && vfioctl bar read $EDU --bar 0 --offset 0x4 --width 4" >/tmp/hf2 ||
    fail "hugefault-count exited $?"
cat /tmp/hf2
check_eq "inserts for two edu reads" "hugefault order=0 ret=256 outcome=inserted count=2" "$(grep '^hugefault order=.*outcome=inserted' /tmp/hf2)"

# The probe is gone afterwards: nothing counts outside hugefault-count.
if grep -q 'hfr' /sys/kernel/tracing/kprobe_events; then fail "the kretprobe is still armed"; else ok "the kretprobe was disarmed"; fi

hugefault-count -q vfioctl bar read $IVSHMEM --bar 2 --offset 0 --width 8 >/tmp/hf3 || fail "hugefault-count exited $?"
cat /tmp/hf3
inserted=$(sed -n 's/^hugefault total=.* inserted=\([0-9]*\).*/\1/p' /tmp/hf3)
check_eq "inserted mappings for one ivshmem BAR2 read" 1 "$inserted"
check_eq "no other outcomes or drops" "other=0 dropped=0" "$(sed -n 's/^hugefault total=.* \(other=.*\)/\1/p' /tmp/hf3)"
bad=$(grep '^hugefault order=' /tmp/hf3 | grep -v -E 'order=(0|9|18) ' )
[ -z "$bad" ] && ok "only orders 0, 9, 18" || fail "unexpected fault orders: $bad"
lab_finish
