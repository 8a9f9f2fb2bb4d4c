# lab: append vfio-pci.ids=1234:11e8
# boot-binding-ids: a boot with vfio-pci.ids=1234:11e8 on the kernel command line (edu's vendor
# and device ID): doctor's boot.bindings names every device that ID catches, both edus
# (00:02.0 and 01:02.0 behind the bridge) with /proc/cmdline as the source, and warns that the
# ID catches two devices; `persist list` and `persist check` say the same.
. /lab/bin/lab-lib.sh
grep -q 'vfio-pci.ids=1234:11e8' /proc/cmdline && ok "the kernel command line has vfio-pci.ids=1234:11e8" || fail "no ids= on the command line: $(cat /proc/cmdline)"
caught=$(for d in /sys/bus/pci/devices/*; do [ "$(dev_id "$(basename "$d")")" = 1234:11e8 ] && basename "$d"; done | tr '\n' ' ')
check_eq "devices of 1234:11e8 in sysfs" "0000:00:02.0 0000:01:02.0 " "$caught"

vfioctl doctor >/tmp/doctor.out 2>&1
for d in $caught; do
    grep -q "$d: kernel-command-line → vfio-pci (/proc/cmdline)" /tmp/doctor.out && ok "doctor names $d, caught by the ID" || fail "doctor misses $d: $(grep -A8 'boot-time binding' /tmp/doctor.out)"
done
grep -q "vfio-pci.ids=1234:11e8 catches 2 devices of that model: 0000:00:02.0 0000:01:02.0" /tmp/doctor.out && ok "doctor warns that the ID catches both" || fail "no catch-all warning: $(grep -A8 'boot-time binding' /tmp/doctor.out)"
vfioctl doctor --json 2>/dev/null | json_flat >/tmp/doctor.flat
grep -q "=0000:01:02.0: kernel-command-line" /tmp/doctor.flat && ok "doctor --json names the second edu" || fail "doctor --json misses 01:02.0"
vfioctl persist list >/tmp/list.out 2>&1
for d in $caught; do grep -q "^$d  kernel-command-line → vfio-pci" /tmp/list.out && ok "persist list names $d" || fail "persist list misses $d: $(cat /tmp/list.out)"; done
vfioctl persist check 0000:01:02.0 >/tmp/check.out 2>&1
grep -q "catches 2 devices" /tmp/check.out && ok "persist check 01:02.0 names the catch-all ID" || fail "persist check: $(cat /tmp/check.out)"
lab_finish
