# example-vmm-linux: examples/vmm-linux, a small VMM written only against vfioctl's library
# products, boots the lab's kernel (the nested guest of vm-config-qemu: Tests/Lab/nested/init)
# with the lab NVMe passed through. The guest's PCI code places the NVMe's BARs itself (the VMM
# pre-assigns nothing; the memslots follow the guest's BAR writes), its nvme driver reads a token
# written here before the boot and writes back its SHA-256 over MSI-X interrupts (irqfd: no exit),
# and this guest's nvme driver reads the answer after the VMM exits. Then the host's QEMU boots the
# same kernel and initramfs with the same device, for the figures in BENCHMARKS.md: guest uptime
# at "nvme ready" and at the token round trip, and KVM exits per second (all exits, KVM's own
# debugfs counter) while the guest reads the 64 MiB disk.
# lab: host-root
# lab: timeout 400
. /lab/bin/lab-lib.sh

NVME=0000:00:05.0
LAB_RESTORE="$LAB_RESTORE $NVME=nvme"
[ -e /dev/kvm ] || { fail "no /dev/kvm in the lab guest (nested KVM)"; lab_finish; }
mount_nested || lab_finish
grep -q ' /sys/kernel/debug ' /proc/mounts || mount -t debugfs debugfs /sys/kernel/debug
kvm_exits() { cat /sys/kernel/debug/kvm/exits 2>/dev/null || echo 0; }

# run_nested NAME LOG CMD...: token written, NVMe bound, CMD run in the background with its
# console in LOG; KVM's exit counter sampled at the guest's "read64" lines; then the answer read
# back through this guest's nvme driver. Prints "figures NAME READY ROUNDTRIP EXITS_PER_S".
run_nested() {
    name=$1 log=$2; shift 2
    write_token || return 1
    vfioctl bind $NVME >/dev/null 2>&1; check_eq "$name: the NVMe is on vfio-pci" vfio-pci "$(dev_driver $NVME)"
    t0=$(cut -d' ' -f1 /proc/uptime)
    "$@" </dev/null >"$log" 2>&1 &
    pid=$!
    ( sleep 150; kill -9 $pid 2>/dev/null ) &
    watchdog=$!
    e0= e1= r0= r1=
    while kill -0 $pid 2>/dev/null; do
        if [ -z "$e0" ] && grep -q 'l2: read64 start' "$log"; then e0=$(kvm_exits); r0=$(cut -d' ' -f1 /proc/uptime); fi
        if [ -n "$e0" ] && [ -z "$e1" ] && grep -q 'l2: read64 done' "$log"; then e1=$(kvm_exits); r1=$(cut -d' ' -f1 /proc/uptime); fi
        usleep 20000
    done
    wait $pid; rc=$?
    kill $watchdog 2>/dev/null
    t1=$(cut -d' ' -f1 /proc/uptime)
    l2=$(tr -d '\r' <"$log")
    echo "$l2" | grep -E '^(l2:|vmm-linux:)' | sed "s/^/$name: /"
    echo "$name ran $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s, exit status $rc"
    check_eq "$name: exits 0 (the nested guest powered off)" 0 "$rc"
    echo "$l2" | grep -q "^l2: nvme driver bound " && ok "$name: the nested guest's nvme driver bound the device" || fail "$name: no nvme driver bound"
    echo "$l2" | grep -q "^l2: read token:$TOKEN\$" && ok "$name: the nested guest read the token" || fail "$name: the token was not read"
    echo "$l2" | grep -q "^l2: wrote $EXPECTED\$" && ok "$name: the nested guest wrote the answer" || fail "$name: no answer written"
    echo "$l2" | grep -q "^l2: irq.*MSI" && ok "$name: nvme interrupts came over MSI-X" || fail "$name: no MSI-X interrupts in /proc/interrupts"
    vfioctl unbind $NVME >/dev/null 2>&1; check_eq "$name: the NVMe is back on nvme" nvme "$(dev_driver $NVME)"
    wait_disk || fail "$name: no namespace after unbind"
    check_eq "$name: this guest reads the nested guest's answer" "$EXPECTED" "$(dd if="$DISK" bs=4096 skip=1 count=1 2>/dev/null | head -c ${#EXPECTED})"
    ready=$(echo "$l2" | sed -n 's/^l2: time nvme-ready //p') trip=$(echo "$l2" | sed -n 's/^l2: time round-trip //p')
    rate=$(awk -v e0="${e0:-0}" -v e1="${e1:-0}" -v a="${r0:-0}" -v b="${r1:-0}" 'BEGIN { if (b > a) printf "%.0f", (e1 - e0) / (b - a); else print "n/a" }')
    echo "figures $name nvme-ready ${ready:-n/a} s, round-trip ${trip:-n/a} s (guest uptime), $rate exits/s reading 64 MiB ($((${e1:-0} - ${e0:-0})) exits)"
}

run_nested vmm-linux /tmp/l2-vmm-linux.log vmm-linux "$NESTED/vmlinuz" "$NESTED/initramfs.cpio.gz" --device $NVME --memory 256 \
    --append "quiet no_timer_check lab.read64" --timeout 140
log=$(cat /tmp/l2-vmm-linux.log)
echo "$log" | grep -q "^vmm-linux: device BARs at BAR 0 0x[1-9a-f]" && ok "vmm-linux: the guest's PCI code placed BAR 0 and its memslot followed" ||
    fail "vmm-linux: BAR 0 was not placed by the guest"
echo "$log" | grep -q "^vmm-linux: .*vectors delivered [1-9]" && ok "vmm-linux: MSI-X vectors delivered through irqfd" || fail "vmm-linux: no vector delivered"
run_nested qemu /tmp/l2-qemu.log host_qemu -enable-kvm -machine q35 -cpu host -smp 1 -nodefaults -no-user-config -nic none -display none \
    -no-reboot -m 256M -kernel "$NESTED/vmlinuz" -initrd "$NESTED/initramfs.cpio.gz" -append "console=ttyS0 quiet panic=-1 no_timer_check lab.read64" \
    -serial stdio -device vfio-pci,host=$NVME,rombar=0
lab_finish
