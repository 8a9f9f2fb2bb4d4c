# bind-roundtrip: `vfioctl bind` and `unbind` of edu (no driver), e1000e (driver e1000e) and the
# NVMe controller (driver nvme) against the real vfio-pci: after bind the driver link is vfio-pci
# and /dev/vfio/<group> exists, the journal remembers the original driver; after unbind the
# original driver is back and the journal entry is gone.
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh
trap 'vfioctl restore --all >/dev/null 2>&1; lab_restore' EXIT

for dev in 0000:00:02.0 0000:00:04.0 0000:00:05.0; do
    before=$(dev_driver "$dev")
    group=$(dev_group "$dev")
    echo "-- $dev (driver ${before:-none}, group $group)"
    vfioctl bind "$dev" --json >/tmp/bind.json 2>/tmp/bind.err
    rc=$?
    json_flat </tmp/bind.json >/tmp/bind.flat
    check_eq "bind $dev exit status" 0 "$rc"
    check_eq "bind $dev action" bound "$(json_get /tmp/bind.flat '[0].action')"
    check_eq "bind $dev from_driver" "${before:-null}" "$(json_get /tmp/bind.flat '[0].from_driver')"
    check_eq "bind $dev to_driver" vfio-pci "$(json_get /tmp/bind.flat '[0].to_driver')"
    check_eq "driver link of $dev after bind" vfio-pci "$(dev_driver "$dev")"
    if [ -c "/dev/vfio/$group" ]; then ok "/dev/vfio/$group exists"; else fail "/dev/vfio/$group missing after bind"; fi
    no_journal_entry "$dev" && fail "journal has no entry for $dev" || ok "journal records $dev"
    recorded=$(journal_original "$dev")
    check_eq "journal's original driver for $dev" "${before:-null}" "$recorded"

    # A second bind changes nothing.
    vfioctl bind "$dev" --json | json_flat >/tmp/again.flat
    check_eq "second bind of $dev" unchanged "$(json_get /tmp/again.flat '[0].action')"

    vfioctl unbind "$dev" --json >/tmp/unbind.json 2>/tmp/unbind.err
    rc=$?
    json_flat </tmp/unbind.json >/tmp/unbind.flat
    check_eq "unbind $dev exit status" 0 "$rc"
    check_eq "unbind $dev action" unbound "$(json_get /tmp/unbind.flat '[0].action')"
    check_eq "driver of $dev after unbind" "${before:-}" "$(dev_driver "$dev")"
    check_eq "driver_override of $dev after unbind" "(null)" "$(cat "$(sysfs_dev "$dev")/driver_override")"
    no_journal_entry "$dev" && ok "journal entry for $dev removed" || fail "journal still has $dev after unbind"
done
lab_finish
