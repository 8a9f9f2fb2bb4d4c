# example-kvm-passthrough: examples/kvm-passthrough (the VFIO, KVM and Passthrough libraries
# used directly, as a VMM would) assigns edu to a tiny nested KVM guest: its BAR0 becomes a
# memslot (guest reads go straight to the device), the slot is deleted and re-added while the
# guest runs (reads in between exit and are served by VFIO, with the same value), and guest RAM
# DMA-mapped at IOVA = gpa receives edu's DMA, which the guest reads back.
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0
[ -e /dev/kvm ] || fail "no /dev/kvm in the lab guest (nested KVM)"
lab_bind $EDU vfio-pci || fail "could not bind $EDU to vfio-pci"
kvm-passthrough $EDU 50 >/tmp/kp.out 2>&1
rc=$?
sed 's/^/  /' /tmp/kp.out
check_eq "kvm-passthrough exit status" 0 "$rc"
check_eq "MMIO exits by phase (present, deleted, re-added)" "50, 0" \
    "$(sed -n 's/^MMIO exits by phase (slots present, deleted, re-added): 0, \([0-9]*\), \([0-9]*\)$/\1, \2/p' /tmp/kp.out)"
grep -q "guest read BAR 0 at .* 150 times in one run; host pread: 0x10000ed" /tmp/kp.out && ok "150 reads in one guest run, edu's id" || fail "no read summary"
grep -q "^ok: the guest sees what the device wrote into its RAM" /tmp/kp.out && ok "DMA into guest RAM at IOVA = gpa" || fail "no DMA check"
lab_finish
