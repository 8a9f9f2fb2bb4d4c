# example-vmm-linux: examples/vmm-linux, a VMM written only against vfioctl's public products,
# boots the lab's kernel and the nested initramfs (Tests/Lab/nested/init) on this guest's KVM with
# the NVMe passed through; the nested guest's own PCI code places the BARs (the VMM leaves them
# unassigned), its nvme driver reads a random token written to the disk here and writes back its
# SHA-256, which this guest's nvme driver reads after the VMM exits (the check vm-config-qemu
# makes). Then the host's QEMU boots the same kernel and initramfs with the same device, and both
# are measured the same way: time to "nvme ready" and to the token round trip (from the VMM's
# start, on this guest's clock), and exits while the nested guest reads the 64 MiB disk (this
# guest's kvm_exit and kvm_userspace_exit tracepoints). Lines "bench:" are what BENCHMARKS.md quotes.
# lab: host-root
# lab: manual (run by name: it passed in parts, not yet whole in one run; see examples/README.md)
# lab: timeout 330
. /lab/bin/lab-lib.sh

NVME=0000:00:05.0
LAB_RESTORE="$LAB_RESTORE $NVME=nvme"
T=/sys/kernel/tracing
[ -e /dev/kvm ] || fail "no /dev/kvm in the lab guest (nested KVM)"
mount_nested || lab_finish
[ -d $T/events ] || mount -t tracefs tracefs $T
echo 'hist:keys=exit_reason' >$T/events/kvm/kvm_exit/trigger || fail "no kvm_exit histogram"
echo 'hist:keys=reason' >$T/events/kvm/kvm_userspace_exit/trigger || fail "no kvm_userspace_exit histogram"
hits() { sed -n 's/^ *Hits: *//p' $T/events/kvm/$1/hist; }
uptime_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }

# boot NAME COMMAND...: runs a VMM (150 s at most) with every console line stamped with the ms
# since its start on arrival here, and the exit counters read when the nested guest starts and
# ends its 64 MiB read. Output: /tmp/NAME.out; sets RC.
boot() {
    name=$1; shift
    t0=$(uptime_ms)
    { "$@" </dev/null 2>&1 & echo $! >/tmp/$name.pid; wait $!; echo "@rc $?"; } | tr -d '\r' | while IFS= read -r line; do
        echo "$(($(uptime_ms) - t0)) $line"
        case $line in *"l2: read64 start"* | *"l2: read64 done"*) echo "$(($(uptime_ms) - t0)) @exits $(hits kvm_exit) $(hits kvm_userspace_exit)" ;; esac
    done >/tmp/$name.out &
    reader=$!
    ( sleep 150; kill -9 "$(cat /tmp/$name.pid)" 2>/dev/null ) &
    watchdog=$!
    wait $reader
    kill $watchdog 2>/dev/null
    RC=$(sed -n 's/^[0-9]* @rc //p' /tmp/$name.out)
    grep -v '@exits\|@rc' /tmp/$name.out | grep -E ' l2:| vmm-linux:|refus|Kernel panic|BUG' | sed "s/^/$name: /"
    [ "$RC" = 0 ] || { echo "$name: the last console lines:"; tail -n 25 /tmp/$name.out | sed "s/^/$name: /"; }
}
# measure NAME: the bench line for one VMM's run.
measure() {
    ready=$(sed -n 's/^\([0-9]*\) .*l2: nvme driver bound .*/\1/p' /tmp/$1.out | head -n 1)
    trip=$(sed -n 's/^\([0-9]*\) .*l2: wrote answer .*/\1/p' /tmp/$1.out | head -n 1)
    set -- "$1" $(sed -n 's/^\([0-9]*\) @exits \([0-9]*\) \([0-9]*\)/\1 \2 \3/p' /tmp/$1.out | tr '\n' ' ')
    if [ $# -eq 7 ] && [ "$5" -gt "$2" ]; then
        ms=$(($5 - $2)) exits=$(($6 - $3)) user=$(($7 - $4))
        echo "bench: $1: nvme ready ${ready:-?} ms, token round trip ${trip:-?} ms, 64 MiB read in $ms ms: $exits exits ($((exits * 1000 / ms))/s), $user to userspace ($((user * 1000 / ms))/s)"
        USER_EXITS=$user
    else
        fail "$1: no 64 MiB read measured"
    fi
}
# verify NAME TOKEN EXPECTED: the nested guest's answer, read by this guest's nvme driver.
verify() {
    grep -q " l2: nvme driver bound " /tmp/$1.out && ok "$1: the nested guest's nvme driver bound the device" || fail "$1: no nvme driver bound in the nested guest"
    grep -q " l2: read token:$2\$" /tmp/$1.out && ok "$1: the nested guest read the token" || fail "$1: the nested guest did not read token:$2"
    grep -q " l2: irq.*MSI" /tmp/$1.out && ok "$1: nvme interrupts came over MSI-X" || fail "$1: no MSI-X nvme interrupts in the nested guest"
    vfioctl unbind $NVME >/dev/null 2>&1
    wait_disk || fail "no namespace of the lab NVMe after unbind"
    answer=$(dd if="$DISK" bs=4096 skip=1 count=1 2>/dev/null | head -c ${#3})
    check_eq "$1: this guest's nvme driver reads the nested guest's answer" "$3" "$answer"
}

# --- vmm-linux -------------------------------------------------------------------------------
write_token
token=$TOKEN expected=$EXPECTED
vfioctl bind $NVME >/dev/null || fail "vfioctl bind $NVME"
boot vmm-linux vmm-linux "$NESTED/vmlinuz" "$NESTED/initramfs.cpio.gz" --device $NVME --memory 256 --timeout 145 \
    --append "quiet no_timer_check lab.read64"
check_eq "vmm-linux exits 0 (the nested guest powered off)" 0 "$RC"
grep ' vmm-linux: device:' /tmp/vmm-linux.out | grep -q 'refus' && fail "vmm-linux refused a guest write (above)"
verify vmm-linux "$token" "$expected"
measure vmm-linux
irqs=$(sed -n 's/.* l2: irq *[0-9]*: *\([0-9]*\) .*MSI.*/\1/p' /tmp/vmm-linux.out | awk '{ n += $1 } END { print n + 0 }')
[ "$irqs" -gt "${USER_EXITS:-0}" ] && ok "nvme interrupts ($irqs) outnumber the exits to userspace during the read (${USER_EXITS:-?}): irqfd, no exit per interrupt" ||
    fail "nvme interrupts ($irqs) do not outnumber the exits to userspace during the read (${USER_EXITS:-?})"
# The nested guest's PCI code placed BAR0; the VMM's memslot for it is at that address.
l2bar=$(sed -n 's/.* l2: resource0 \(0x[0-9a-f]*\) .*/\1/p' /tmp/vmm-linux.out)
slot=$(sed -n 's/.* vmm-linux: memslot .* gpa \(0x[0-9a-f]*\) .* BAR 0$/\1/p' /tmp/vmm-linux.out | head -n 1)
[ -n "$l2bar" ] && [ "$((l2bar))" -ne 0 ] && ok "the nested guest's PCI code placed BAR0 at $l2bar" || fail "BAR0 not placed by the nested guest ('$l2bar')"
[ -n "$slot" ] && [ "$((slot))" -eq "$((l2bar))" ] && ok "BAR0's memslot follows it ($slot)" || fail "BAR0's memslot is at '$slot', the guest put it at '$l2bar'"

# --- the host's QEMU, same kernel, initramfs and device --------------------------------------
write_token
token=$TOKEN expected=$EXPECTED
vfioctl bind $NVME >/dev/null || fail "vfioctl bind $NVME"
boot qemu host_qemu -enable-kvm -machine q35 -cpu host -smp 1 -m 256 -nodefaults -no-user-config -nic none -display none \
    -no-reboot -kernel "$NESTED/vmlinuz" -initrd "$NESTED/initramfs.cpio.gz" -serial stdio \
    -append "console=ttyS0 quiet panic=-1 no_timer_check lab.read64" -device vfio-pci,host=$NVME,rombar=0
check_eq "QEMU exits 0" 0 "$RC"
verify qemu "$token" "$expected"
measure qemu
lab_finish
