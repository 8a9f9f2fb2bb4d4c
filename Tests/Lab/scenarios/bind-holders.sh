# bind-holders: a process holding a device stops bind and unbind (exit 3, nothing changed, the
# pid named) unless --force: the NVMe's namespace held open with nothing mounted; the NVMe on
# vfio-pci with its group open (as a VM has it). An unbind whose driver remove waits for a VFIO
# user (device fd open) stops waiting after VFIOCTL_UNBIND_TIMEOUT, names the holder, leaves the
# journal saying "unbinding", finishes once the holder exits, and `restore` completes it.
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh
NVME=0000:00:05.0
# The journal is appended: the last line for an address is its state.
JOURNAL=/run/vfioctl/journal.jsonl
holder=
stop_holder() { [ -n "$holder" ] && { kill "$holder"; wait "$holder"; } 2>/dev/null; holder=; }
cleanup() { stop_holder; vfioctl restore --all >/dev/null 2>&1; lab_restore; }
trap cleanup EXIT
# reason_has FILE TEXT: the first outcome's reason names TEXT.
reason_has() {
    json_flat <"$1" >/tmp/holders.flat
    reason=$(json_get /tmp/holders.flat '[0].reason')
    case $reason in *"$2"*) ok "reason names '$2'" ;; *) fail "reason '$reason' lacks '$2'" ;; esac
}

ns=$(ls /sys/block | grep '^nvme' | head -n 1)
[ -n "$ns" ] || fail "no NVMe namespace"
sleep 600 <"/dev/$ns" &
holder=$!
wait_for "/proc/$holder/fd/0" || fail "the holder did not start"
override=$(cat "$(sysfs_dev $NVME)/driver_override")
vfioctl bind $NVME --json >/tmp/bind.json 2>/tmp/bind.err
check_eq "bind of a held NVMe: exit status" 3 "$?"
reason_has /tmp/bind.json "pid $holder (sleep) has /dev/$ns"
check_eq "driver unchanged" nvme "$(dev_driver $NVME)"
check_eq "driver_override unchanged" "$override" "$(cat "$(sysfs_dev $NVME)/driver_override")"
if no_journal_entry $NVME; then ok "journal untouched"; else fail "journal has an entry"; fi
vfioctl show $NVME >/tmp/show.txt
grep -q "pid $holder (sleep) has /dev/$ns (block" /tmp/show.txt && ok "show names the holder" || fail "show: $(grep -A2 'Held by' /tmp/show.txt)"
# --force goes ahead (the nvme driver lets go of an open disk).
vfioctl bind $NVME --force --json >/tmp/forced.json
check_eq "forced bind: exit status" 0 "$?"
json_flat </tmp/forced.json >/tmp/forced.flat
check_eq "forced bind" bound "$(json_get /tmp/forced.flat '[0].action')"
check_eq "on vfio-pci" vfio-pci "$(dev_driver $NVME)"
stop_holder

# The group open, as a VM holds it: unbind refused, nothing changed; doctor lists it.
group=$(dev_group $NVME)
sleep 600 <"/dev/vfio/$group" &
holder=$!
wait_for "/proc/$holder/fd/0" || fail "the group holder did not start"
vfioctl unbind $NVME --json >/tmp/unbind.json 2>/tmp/unbind.err
check_eq "unbind of a held device: exit status" 3 "$?"
reason_has /tmp/unbind.json "pid $holder (sleep) has /dev/vfio/$group"
check_eq "still on vfio-pci" vfio-pci "$(dev_driver $NVME)"
vfioctl doctor --json | json_flat >/tmp/doctor.flat
grep -q "holders.$NVME" /tmp/doctor.flat && ok "doctor lists the holder" || fail "doctor has no holders.$NVME finding"
grep -q "pid $holder (sleep)" /tmp/doctor.flat && ok "doctor names the pid" || fail "doctor does not name pid $holder"
stop_holder

# A VFIO user with the device fd open: vfio-pci's remove waits for it. Forced, the unbind gives
# up after 2 s with the holder named, the journal saying "unbinding"; it finishes when the holder
# exits, and restore gives the NVMe back to nvme.
vfio-hold "$group" $NVME >/tmp/hold.out 2>&1 &
holder=$!
n=0; while ! grep -q ready /tmp/hold.out && [ $n -lt 50 ]; do usleep 100000; n=$((n + 1)); done
grep -q ready /tmp/hold.out || fail "vfio-hold: $(cat /tmp/hold.out)"
start=$(date +%s)
VFIOCTL_UNBIND_TIMEOUT=2 vfioctl unbind $NVME --force >/tmp/pending.out 2>/tmp/pending.err
rc=$? took=$(($(date +%s) - start))
check_eq "unbind that does not return: exit status" 1 "$rc"
[ "$took" -le 8 ] && ok "gave up after ${took} s" || fail "took ${took} s"
grep -q "did not return within 2 s" /tmp/pending.err && ok "says it did not return" || fail "stderr: $(cat /tmp/pending.err)"
grep -q "pid $holder (vfio-hold) has /dev/vfio/$group" /tmp/pending.err && ok "names the holder" || fail "holder not named: $(cat /tmp/pending.err)"
grep "\"$NVME\"" "$JOURNAL" 2>/dev/null | tail -n 1 | grep -q '"unbinding"' && ok "journal says unbinding" || fail "journal: $(cat $JOURNAL)"
stop_holder
n=0; while [ -n "$(dev_driver $NVME)" ] && [ $n -lt 50 ]; do usleep 100000; n=$((n + 1)); done
check_eq "the pending unbind finished once the holder exited" "" "$(dev_driver $NVME)"
vfioctl restore >/tmp/restore.out 2>&1 || fail "restore: $(cat /tmp/restore.out)"
check_eq "restored" nvme "$(dev_driver $NVME)"
if no_journal_entry $NVME; then ok "journal empty"; else fail "journal still has $NVME"; fi
lab_finish
