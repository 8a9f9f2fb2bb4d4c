# bind-crash: a bind killed (SIGKILL, by the fault-injection hook, which only
# `vfioctl-lab-probe with-test-hooks` sets: the shipping vfioctl ignores the variable) after each of its steps leaves
# a journal from which `vfioctl restore` returns the device to its original driver. Then the
# faults a real host can add: the journal cannot be written after the bind (/run full, injected
# with VFIOCTL_JOURNAL_FAIL), for one device and for a group; the original driver is unloaded
# while the device is on vfio-pci; a journal entry that names another device than the one there.
# lab: timeout 300
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh
trap 'vfioctl restore --all >/dev/null 2>&1; insmod /lib/modules/e1000.ko 2>/dev/null; lab_restore' EXIT

for dev in 0000:00:04.0 0000:00:02.0; do
    original=$(dev_driver "$dev")
    for step in journaled override-set unbound probed verified; do
        VFIOCTL_FAULT_INJECT=$step vfioctl-lab-probe with-test-hooks bind "$dev" >/tmp/crash.out 2>&1
        rc=$?
        check_eq "$dev killed after $step" 137 "$rc"
        no_journal_entry "$dev" && fail "no journal entry for $dev after $step" || ok "journal has $dev after the crash"
        vfioctl restore --json >/tmp/restore.json 2>/tmp/restore.err
        check_eq "restore after $step: exit status" 0 "$?"
        json_flat </tmp/restore.json >/tmp/restore.flat
        check_eq "restore after $step: action" unbound "$(json_get /tmp/restore.flat '[0].action')"
        check_eq "$dev driver after restore ($step)" "$original" "$(dev_driver "$dev")"
        check_eq "$dev driver_override after restore ($step)" "(null)" "$(cat "$(sysfs_dev "$dev")/driver_override")"
        no_journal_entry "$dev" && ok "journal clean after restore" || fail "journal still has $dev after restore"
    done
done

# The shipping vfioctl reads no test hook: the same variable changes nothing.
dev=0000:00:04.0
original=$(dev_driver "$dev")
VFIOCTL_FAULT_INJECT=journaled VFIOCTL_JOURNAL_FAIL=1 vfioctl bind "$dev" >/tmp/shipping.out 2>&1
check_eq "shipping vfioctl ignores VFIOCTL_FAULT_INJECT and VFIOCTL_JOURNAL_FAIL" 0 "$?"
check_eq "$dev bound by the shipping vfioctl" vfio-pci "$(dev_driver "$dev")"
vfioctl unbind "$dev" >/dev/null 2>&1
check_eq "$dev back after unbind" "$original" "$(dev_driver "$dev")"

# The journal cannot record the finished bind: the device really goes back (exit 4), not
# "rolled back" while it sits on vfio-pci. With every later write failing too, the entry that
# says a bind was in progress stays, and restore finds the device home.
NET=0000:00:04.0
for failing in 2 2+; do
    VFIOCTL_JOURNAL_FAIL=$failing vfioctl-lab-probe with-test-hooks bind $NET --json >/tmp/jf.json 2>/tmp/jf.err
    check_eq "journal failing at $failing: exit status" 4 "$?"
    json_flat </tmp/jf.json >/tmp/jf.flat
    check_eq "journal failing at $failing: action" rolled-back "$(json_get /tmp/jf.flat '[0].action')"
    check_eq "journal failing at $failing: e1000e back" e1000e "$(dev_driver $NET)"
    check_eq "journal failing at $failing: override cleared" "(null)" "$(cat "$(sysfs_dev $NET)/driver_override")"
done
vfioctl restore >/dev/null 2>&1
check_eq "restore after the journal failures" 0 "$?"
no_journal_entry $NET && ok "journal clean after restore" || fail "journal still has $NET"

# A group bind stays all or nothing when the journal fails after both devices were bound.
E1000=0000:01:01.0 EDU2=0000:01:02.0
edu2_before=$(dev_driver $EDU2)
VFIOCTL_JOURNAL_FAIL=2 vfioctl-lab-probe with-test-hooks bind $E1000 --group --json >/tmp/gf.json 2>/tmp/gf.err
check_eq "group bind with the journal failing: exit status" 4 "$?"
json_flat </tmp/gf.json >/tmp/gf.flat
check_eq "group: e1000 rolled back" rolled-back "$(field_of /tmp/gf.flat address $E1000 action)"
check_eq "group: edu rolled back" rolled-back "$(field_of /tmp/gf.flat address $EDU2 action)"
check_eq "group: e1000 on e1000" e1000 "$(dev_driver $E1000)"
check_eq "group: edu as before" "$edu2_before" "$(dev_driver $EDU2)"
no_journal_entry $E1000 && ok "group: no journal entry" || fail "group: journal keeps $E1000"

# The original driver unloaded while the device is on vfio-pci: unbind says the device did not
# return (exit 5, where it is), the entry stays, and restore finishes once the driver is back.
vfioctl bind $E1000 >/dev/null 2>&1 || fail "bind $E1000"
rmmod e1000 || fail "could not unload e1000"
vfioctl unbind $E1000 --json >/tmp/nr.json 2>/tmp/nr.err
check_eq "unbind to an unloaded driver: exit status" 5 "$?"
json_flat </tmp/nr.json >/tmp/nr.flat
check_eq "unbind to an unloaded driver: action" not-returned "$(json_get /tmp/nr.flat '[0].action')"
check_eq "unbind to an unloaded driver: where it is" null "$(json_get /tmp/nr.flat '[0].to_driver')"
no_journal_entry $E1000 && fail "the entry was dropped" || ok "the entry is kept"
insmod /lib/modules/e1000.ko || fail "could not reload e1000"
vfioctl restore --json >/tmp/nr-restore.json 2>&1
check_eq "restore once e1000 is back: exit status" 0 "$?"
check_eq "e1000 back on e1000" e1000 "$(dev_driver $E1000)"

# A journal entry for another device than the one at the address (here: the e1000e's IDs at the
# NVMe's address) is refused by restore: the NVMe stays on nvme.
NVME=0000:00:05.0
mkdir -p /run/vfioctl
echo "{\"address\":\"$NVME\",\"identity\":{\"device\":\"10d3\",\"subsystem_device\":\"0000\",\"subsystem_vendor\":\"8086\",\"vendor\":\"8086\"},\"original_driver\":null,\"original_override\":null,\"state\":\"binding\",\"updated\":\"2026-11-26T12:00:00Z\"}" >/run/vfioctl/journal.jsonl
vfioctl restore --all --json >/tmp/foreign.json 2>/tmp/foreign.err
check_eq "foreign entry: restore refuses (exit 3)" 3 "$?"
grep -q "not the device vfioctl bound" /tmp/foreign.json && ok "the refusal names the mismatch" || fail "refusal: $(cat /tmp/foreign.json)"
check_eq "the NVMe stays on nvme" nvme "$(dev_driver $NVME)"
rm -f /run/vfioctl/journal.jsonl
lab_finish
