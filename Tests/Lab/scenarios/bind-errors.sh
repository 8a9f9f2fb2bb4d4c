# bind-errors: binding as a user without root, and binding with vfio-pci unloaded, each end with
# a one-line error that says what to do, and change nothing; a bind the kernel refuses is rolled back.
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh
DEV=0000:00:04.0
trap 'insmod /lib/modules/vfio_pci.ko 2>/dev/null; vfioctl restore --all >/dev/null 2>&1; lab_restore' EXIT

unchanged() { # LABEL
    check_eq "$1: driver unchanged" e1000e "$(dev_driver "$DEV")"
    check_eq "$1: driver_override unchanged" "(null)" "$(cat "$(sysfs_dev "$DEV")/driver_override")"
    no_journal_entry "$DEV" && ok "$1: no journal entry" || fail "$1: journal written"
}

su -s /bin/sh nobody -c "vfioctl bind $DEV" >/tmp/user.out 2>/tmp/user.err
rc=$?
cat /tmp/user.err
[ "$rc" -ne 0 ] && ok "non-root bind fails (status $rc)" || fail "non-root bind succeeded"
check_eq "non-root error is one line" 1 "$(wc -l </tmp/user.err | tr -d ' ')"
grep -q "needs root" /tmp/user.err && ok "the error says root is needed" || fail "error does not mention root"
unchanged "non-root"

# Without vfio-pci (and no modprobe that can load it) the bind stops before touching anything.
rmmod vfio_pci || fail "could not unload vfio_pci"
vfioctl bind "$DEV" >/tmp/nomod.out 2>/tmp/nomod.err
rc=$?
cat /tmp/nomod.err
[ "$rc" -ne 0 ] && ok "bind without vfio-pci fails (status $rc)" || fail "bind without vfio-pci succeeded"
grep -q "vfio-pci driver is not available" /tmp/nomod.err && ok "the error names the missing driver" || fail "error does not name vfio-pci"
unchanged "no vfio-pci"
insmod /lib/modules/vfio_pci.ko || fail "could not reload vfio_pci"

# A bind the kernel turns down is rolled back: vfio-pci refuses bridges (type 1 headers), so a
# forced bind of the pci-bridge fails verification and the bridge returns to what it had.
BRIDGE=0000:00:06.0
bridge_driver=$(dev_driver "$BRIDGE")
vfioctl bind "$BRIDGE" --force --json >/tmp/rollback.json 2>/tmp/rollback.err
check_eq "forced bridge bind: exit status (rolled back)" 4 "$?"
json_flat </tmp/rollback.json >/tmp/rollback.flat
check_eq "forced bridge bind: action" rolled-back "$(json_get /tmp/rollback.flat '[0].action')"
case $(json_get /tmp/rollback.flat '[0].reason') in *"rolled back"*) ok "the reason says it was rolled back" ;; *) fail "reason: $(json_get /tmp/rollback.flat '[0].reason')" ;; esac
check_eq "bridge driver after rollback" "$bridge_driver" "$(dev_driver "$BRIDGE")"
check_eq "bridge driver_override after rollback" "(null)" "$(cat "$(sysfs_dev "$BRIDGE")/driver_override")"
no_journal_entry "$BRIDGE" && ok "no journal entry after rollback" || fail "journal keeps $BRIDGE"

# Bad addresses and unknown devices.
# A malformed address is a usage error: ArgumentParser's message and the argument's help.
vfioctl bind 0000:00:1f.8 2>/tmp/bad.err; check_eq "bad address status" 64 "$?"
grep -q "DDDD:BB:DD.F or BB:DD.F in hex, function 0-7" /tmp/bad.err && ok "bad address names the form" || fail "bad address message"
vfioctl bind 0000:09:00.0 2>/tmp/unknown.err; check_eq "unknown device status" 1 "$?"
grep -q "no PCI device 0000:09:00.0" /tmp/unknown.err && ok "unknown device named" || fail "unknown device message"
lab_finish
