# bind-persist: `vfioctl persist add` writes a udev rule keyed on the address; with
# systemd-udevd running, a remove and rescan of the e1000e brings it back bound to vfio-pci.
# After `persist remove`, the same remove and rescan brings it back on e1000e, and no rule,
# override or journal entry is left. `persist add --owner vmm` writes udev OWNER=/GROUP=/MODE=0600
# for the device's VFIO nodes: after the rescan its group node is vmm's, mode 0600.
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh
NET=0000:00:04.0
RULES=/etc/udev/rules.d
cleanup() {
    vfioctl persist remove "$NET" >/dev/null 2>&1
    udevadm control --exit 2>/dev/null
    lab_restore
}
trap cleanup EXIT

# rescan [DRIVER]: remove and rescan the NIC, then wait (at most 5 s) for DRIVER to hold it: the
# rule's RUN runs after udevd takes the add event, so the first probe can still be e1000e's.
rescan() {
    # Rules written just now: make udevd reload them before the add event arrives.
    udevadm control --reload 2>/dev/null
    udevadm settle --timeout=10
    echo 1 >"$(sysfs_dev "$NET")/remove"
    echo 1 >/sys/bus/pci/rescan
    wait_for "$(sysfs_dev "$NET")" 5 || fail "$NET did not come back after rescan"
    udevadm settle --timeout=10
    n=0
    while [ -n "${1:-}" ] && [ "$(dev_driver "$NET")" != "$1" ] && [ $n -lt 50 ]; do usleep 100000; n=$((n + 1)); done
}

mkdir -p /run/udev "$RULES"
/lib/systemd/systemd-udevd --daemon --resolve-names=early 2>/tmp/udevd.err || { cat /tmp/udevd.err; fail "systemd-udevd did not start"; }
udevadm control --ping --timeout=5 && ok "systemd-udevd answers" || fail "systemd-udevd does not answer"
check_eq "e1000e on its driver at first" e1000e "$(dev_driver "$NET")"

vfioctl persist add "$NET" --owner vmm --json 2>/dev/null | json_flat >/tmp/persist.flat
check_eq "persist add" added "$(json_get /tmp/persist.flat .action)"
rule=$(json_get /tmp/persist.flat .rule)
grep -q "KERNEL==\"$NET\"" "$rule" && ok "rule keyed on the address" || fail "rule $rule not keyed on $NET"
grep -q 'ATTR{vendor}\|ATTR{device}' "$rule" && fail "rule keyed on vendor/device" || ok "rule not keyed on vendor:device"
vfioctl persist list | grep -q "$NET" && ok "persist list shows it" || fail "persist list misses $NET"

rescan vfio-pci
check_eq "after remove+rescan with the rule" vfio-pci "$(dev_driver "$NET")"
[ -c "/dev/vfio/$(dev_group "$NET")" ] && ok "/dev/vfio/$(dev_group "$NET") exists" || fail "no /dev/vfio node"
grep -q 'OWNER="vmm", GROUP="vmm", MODE="0600"' "$rule" && ok "the rule gives the nodes to vmm" || fail "no OWNER in $rule"
check_eq "owner of /dev/vfio/$(dev_group "$NET") from the rule" "vmm:vmm 600" "$(stat -c '%U:%G %a' "/dev/vfio/$(dev_group "$NET")")"

vfioctl persist remove "$NET" --json | json_flat >/tmp/remove.flat
check_eq "persist remove" removed "$(json_get /tmp/remove.flat .action)"
[ -e "$rule" ] && fail "rule file left behind" || ok "rule file gone"
rescan
check_eq "after remove+rescan without the rule" e1000e "$(dev_driver "$NET")"
check_eq "driver_override left" "(null)" "$(cat "$(sysfs_dev "$NET")/driver_override")"
no_journal_entry "$NET" && ok "no journal entry" || fail "journal mentions $NET"
ls "$RULES" | grep -q vfioctl && fail "a vfioctl rule is left in $RULES" || ok "no vfioctl rule left"
lab_finish
