# vm-config-qemu: a real VMM uses what vfioctl bound. The lab guest mounts the host's root over 9p
# and runs the host's own, unmodified QEMU with -enable-kvm and exactly the arguments
# one `vfioctl vm config` call printed for the NVMe and QEMU's edu device (one VM, two devices,
# one -m); QEMU boots a nested guest (Tests/Lab/nested/init)
# whose nvme driver binds the passed-through controller, reads a random token written to the disk
# here before the boot, and writes its SHA-256 back. After QEMU exits, `vfioctl unbind` returns the
# NVMe to this guest's nvme driver, which reads the answer. Lines starting "vmm:" are what the
# README quotes.
# lab: host-root
. /lab/bin/lab-lib.sh

NVME=0000:00:05.0 EDU=0000:00:02.0
# If a step fails half-way, the NVMe still goes back to nvme (and edu to no driver) when the
# scenario ends.
LAB_RESTORE="$LAB_RESTORE $NVME=nvme $EDU=-"
step() { echo "vmm: \$ $*"; "$@" 2>&1 | sed 's/^/vmm: /'; }

mount_nested || lab_finish
write_token
token=$TOKEN expected=$EXPECTED
echo "token $token written to $NVME"

echo "vmm: ---"
step vfioctl bind $NVME
check_eq "the NVMe is on vfio-pci" vfio-pci "$(dev_driver $NVME)"
step vfioctl bind $EDU
check_eq "edu is on vfio-pci" vfio-pci "$(dev_driver $EDU)"
# One call for the VM's two devices: one -m, one <memory>, host checks for both.
step vfioctl vm config $NVME $EDU --memory 256M
args=$(vfioctl vm config $NVME $EDU --vmm qemu --memory 256M 2>/tmp/vm-config.err)
check_eq "vm config --vmm qemu exits 0" 0 "$?"
check_eq "the printed QEMU arguments" "-m 256M -device vfio-pci,host=$NVME,rombar=0 -device vfio-pci,host=$EDU,rombar=0" "$args"
hostdevs=$(vfioctl vm config $NVME $EDU $NVME --vmm libvirt --memory 256M 2>/dev/null | grep -c '<hostdev ')
check_eq "an address given twice is one <hostdev>" 2 "$hostdevs"

# Exactly the printed arguments ($args unquoted: one word per option), plus the machine, the
# kernel and a console.
echo "vmm: \$ qemu-system-x86_64 -enable-kvm -machine q35 -cpu host -smp 1 -nodefaults -nic none -display none -no-reboot -kernel vmlinuz -initrd initramfs.cpio.gz -serial stdio $args"
t0=$(cut -d' ' -f1 /proc/uptime)
host_qemu -enable-kvm -machine q35 -cpu host -smp 1 -nodefaults -no-user-config -nic none -display none -no-reboot \
    -kernel "$NESTED/vmlinuz" -initrd "$NESTED/initramfs.cpio.gz" -append "console=ttyS0 quiet panic=-1 no_timer_check" \
    -serial stdio $args </dev/null >/tmp/l2.log 2>/tmp/qemu.err &
qemu_pid=$!
# The nested guest powers itself off; a hung one is killed after 100 s.
( sleep 100; kill -9 $qemu_pid 2>/dev/null ) &
watchdog=$!
wait $qemu_pid
rc=$?
kill $watchdog 2>/dev/null
t1=$(cut -d' ' -f1 /proc/uptime)
tr -d '\r' </tmp/l2.log | grep '^l2:' | sed 's/^/vmm: /'
echo "QEMU ran $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s, exit status $rc"
check_eq "QEMU exits 0 (the nested guest powered off)" 0 "$rc"
[ -s /tmp/qemu.err ] && sed 's/^/qemu stderr: /' /tmp/qemu.err
l2=$(tr -d '\r' </tmp/l2.log)
echo "$l2" | grep -q "^l2: nvme driver bound " && ok "the nested guest's nvme driver bound the device" || fail "no nvme driver bound in the nested guest"
echo "$l2" | grep -q "^l2: read token:$token\$" && ok "the nested guest read the token" || fail "the nested guest did not read token:$token"
echo "$l2" | grep -q "^l2: wrote $expected\$" && ok "the nested guest wrote the answer" || fail "the nested guest did not write '$expected'"
echo "$l2" | grep -q "^l2: irq.*MSI" && ok "its interrupts came over MSI-X/MSI" || fail "no MSI interrupts in the nested guest"

step vfioctl unbind $NVME
check_eq "the NVMe is back on nvme" nvme "$(dev_driver $NVME)"
step vfioctl unbind $EDU
wait_disk || fail "no namespace of the lab NVMe after unbind"
answer=$(dd if="$DISK" bs=4096 skip=1 count=1 2>/dev/null | head -c ${#expected})
check_eq "this guest's nvme driver reads the nested guest's answer" "$expected" "$answer"
echo "vmm: ---"
lab_finish
