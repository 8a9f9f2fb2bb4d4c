# bind-crash: a bind killed (SIGKILL, by the fault-injection hook) after each of its steps leaves
# a journal from which `vfioctl restore` returns the device to its original driver.
. /lab/bin/lab-lib.sh
trap 'vfioctl restore --all >/dev/null 2>&1; lab_restore' EXIT
JOURNAL=/run/vfioctl/journal.json

for dev in 0000:00:04.0 0000:00:02.0; do
    original=$(dev_driver "$dev")
    for step in journaled override-set unbound probed verified; do
        VFIOCTL_FAULT_INJECT=$step vfioctl bind "$dev" >/tmp/crash.out 2>&1
        rc=$?
        check_eq "$dev killed after $step" 137 "$rc"
        if grep -q "\"$dev\"" "$JOURNAL"; then ok "journal has $dev after the crash"; else fail "no journal entry for $dev after $step"; fi
        vfioctl restore --json >/tmp/restore.json 2>/tmp/restore.err
        check_eq "restore after $step: exit status" 0 "$?"
        json_flat </tmp/restore.json >/tmp/restore.flat
        check_eq "restore after $step: action" unbound "$(json_get /tmp/restore.flat '[0].action')"
        check_eq "$dev driver after restore ($step)" "$original" "$(dev_driver "$dev")"
        check_eq "$dev driver_override after restore ($step)" "(null)" "$(cat "$(sysfs_dev "$dev")/driver_override")"
        if grep -q "\"$dev\"" "$JOURNAL"; then fail "journal still has $dev after restore"; else ok "journal clean after restore"; fi
    done
done
lab_finish
