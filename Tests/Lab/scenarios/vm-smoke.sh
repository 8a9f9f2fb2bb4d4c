# vm-smoke: passthrough composition under nested KVM. `vfioctl vm smoke` boots a tiny 32-bit
# guest whose BARs are KVM memslots over edu's (and ivshmem's) VFIO mmaps: the guest reads
# edu's 0x010000ed with no MMIO exit; with --toggle the slots are deleted and the same read
# exits and is served by a VFIO region read (same value), then the slots come back. Also: a
# clear error for an unbound device and for a missing /dev/kvm.
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0
IVSHMEM=0000:00:03.0
trap 'vfioctl unbind $EDU >/dev/null 2>&1; vfioctl unbind $IVSHMEM >/dev/null 2>&1; [ -e /tmp/kvm.hidden ] && mv /tmp/kvm.hidden /dev/kvm; lab_restore' EXIT

[ -c /dev/kvm ] && ok "/dev/kvm present in the lab guest (nested KVM)" || fail "no /dev/kvm in the lab guest"

# Not bound yet: refused with the command to run.
if out=$(vfioctl vm smoke $EDU 2>&1); then
    fail "vm smoke succeeded on a device not bound to vfio-pci: $out"
else
    echo "$out" | grep -q "bind it first: vfioctl bind $EDU" && ok "unbound device refused: $out" || fail "unbound device: unhelpful error: $out"
fi

vfioctl bind $EDU >/dev/null || fail "vfioctl bind $EDU exited $?"
check_eq "driver of $EDU after bind" vfio-pci "$(dev_driver $EDU)"

# Text output, for the log.
vfioctl vm smoke $EDU --toggle || fail "vm smoke --toggle (text) exited $?"

vfioctl vm smoke $EDU --toggle --json >/tmp/smoke.json 2>/tmp/smoke.err || fail "vm smoke --toggle --json exited $?: $(cat /tmp/smoke.err)"
json_flat </tmp/smoke.json >/tmp/smoke.flat
check_eq "BAR passed through" 0 "$(json_get /tmp/smoke.flat '.bars[0].bar')"
check_eq "BAR 0 region size" 1048576 "$(json_get /tmp/smoke.flat '.bars[0].region_size')"
check_eq "host pread of edu +0x0" 0x010000ed "$(json_get /tmp/smoke.flat '.reads[0].host_value')"
check_eq "phase 1 name" memslot "$(json_get /tmp/smoke.flat '.phases[0].name')"
check_eq "phase 1 slots present" true "$(json_get /tmp/smoke.flat '.phases[0].slots_present')"
check_eq "phase 1: guest read through the memslot" 0x010000ed "$(json_get /tmp/smoke.flat '.phases[0].values[0]')"
check_eq "phase 1: MMIO exits" 0 "$(json_get /tmp/smoke.flat '.phases[0].mmio_exits')"
check_eq "phase 1: I/O exits (one report)" 1 "$(json_get /tmp/smoke.flat '.phases[0].io_exits')"
check_eq "phase 2 name" mmio "$(json_get /tmp/smoke.flat '.phases[1].name')"
check_eq "phase 2 slots present" false "$(json_get /tmp/smoke.flat '.phases[1].slots_present')"
check_eq "phase 2: guest read through an MMIO exit" 0x010000ed "$(json_get /tmp/smoke.flat '.phases[1].values[0]')"
check_eq "phase 2: MMIO exits" 1 "$(json_get /tmp/smoke.flat '.phases[1].mmio_exits')"
check_eq "phase 3: slots back" true "$(json_get /tmp/smoke.flat '.phases[2].slots_present')"
check_eq "phase 3: guest read through the memslot again" 0x010000ed "$(json_get /tmp/smoke.flat '.phases[2].values[0]')"
check_eq "phase 3: MMIO exits" 0 "$(json_get /tmp/smoke.flat '.phases[2].mmio_exits')"
check_eq "vm smoke ok" true "$(json_get /tmp/smoke.flat '.ok')"
echo "times (ns): memslot $(json_get /tmp/smoke.flat '.phases[0].nanoseconds'), mmio $(json_get /tmp/smoke.flat '.phases[1].nanoseconds'), memslot-again $(json_get /tmp/smoke.flat '.phases[2].nanoseconds')"

# ivshmem: BAR2 (2 GiB of RAM behind it) is placed 1 GiB-congruent; its 256-byte BAR0 cannot
# be a memslot (not whole pages) and is skipped with the reason. A value written through
# `bar write` is what the guest reads, both ways.
vfioctl bind $IVSHMEM >/dev/null || fail "vfioctl bind $IVSHMEM exited $?"
vfioctl bar write $IVSHMEM --bar 2 --offset 0 --width 4 0x5eed1234 || fail "bar write on ivshmem exited $?"
if vfioctl vm smoke $IVSHMEM --toggle --json >/tmp/iv.json 2>/tmp/iv.err; then
    json_flat </tmp/iv.json >/tmp/iv.flat
    grep -E '^\.(bars|skipped|phases)' /tmp/iv.flat | grep -vE 'host_address' | sed 's/^/  ivshmem: /'
    check_eq "ivshmem BAR passed through" 2 "$(json_get /tmp/iv.flat '.bars[0].bar')"
    check_eq "ivshmem BAR2 congruence (1 GiB)" 1073741824 "$(json_get /tmp/iv.flat '.bars[0].areas[0].huge_page_congruence')"
    check_eq "ivshmem BAR0 skipped" 0 "$(json_get /tmp/iv.flat '.skipped[0].bar')"
    check_eq "ivshmem: guest read through the memslot" 0x5eed1234 "$(json_get /tmp/iv.flat '.phases[0].values[0]')"
    check_eq "ivshmem: MMIO exits with the slot" 0 "$(json_get /tmp/iv.flat '.phases[0].mmio_exits')"
    check_eq "ivshmem: guest read through an MMIO exit" 0x5eed1234 "$(json_get /tmp/iv.flat '.phases[1].values[0]')"
    check_eq "ivshmem: MMIO exits without the slot" 1 "$(json_get /tmp/iv.flat '.phases[1].mmio_exits')"
else
    fail "vm smoke on ivshmem exited $?: $(cat /tmp/iv.err)"
fi

# No /dev/kvm: a clear error that says what to load.
mv /dev/kvm /tmp/kvm.hidden
out=$(vfioctl vm smoke $EDU 2>&1) && fail "vm smoke without /dev/kvm succeeded: $out" \
    || { echo "$out" | grep -q "open /dev/kvm failed.*load kvm_intel or kvm_amd" && ok "missing /dev/kvm refused: $out" || fail "missing /dev/kvm: unhelpful error: $out"; }
mv /tmp/kvm.hidden /dev/kvm

vfioctl unbind $EDU >/dev/null || fail "vfioctl unbind $EDU exited $?"
vfioctl unbind $IVSHMEM >/dev/null || fail "vfioctl unbind $IVSHMEM exited $?"
check_eq "driver of $EDU after unbind" "" "$(dev_driver $EDU)"
lab_finish
