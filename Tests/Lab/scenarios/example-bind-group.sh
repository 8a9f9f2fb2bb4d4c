# example-bind-group: examples/bind-group (the PCIBinding library used directly) binds the
# whole group behind the pci-bridge (e1000 01:01.0 on e1000, edu 01:02.0 on no driver) to
# vfio-pci, which makes the group viable, then gives each device back to its own driver; the
# journal is empty afterwards. Pointed at the boot display, it refuses with exit status 3 and
# changes nothing.
. /lab/bin/lab-lib.sh

E1000=0000:01:01.0 EDU2=0000:01:02.0 BRIDGE=0000:00:06.0 VGA=0000:00:01.0
before_e1000=$(dev_driver $E1000) before_edu=$(dev_driver $EDU2)
check_eq "e1000 starts on its own driver" e1000 "$before_e1000"

bind-group $E1000 >/tmp/bg.json || fail "bind-group exited $?"
cat /tmp/bg.json
json_flat </tmp/bg.json >/tmp/bg.flat
check_eq "before: e1000 on e1000" e1000 "$(json_get /tmp/bg.flat ".before.$E1000")"
check_eq "bound: e1000 on vfio-pci" vfio-pci "$(json_get /tmp/bg.flat ".bound.$E1000")"
check_eq "bound: edu on vfio-pci" vfio-pci "$(json_get /tmp/bg.flat ".bound.$EDU2")"
bridge_driver=$(dev_driver $BRIDGE)
check_eq "bound: the bridge keeps its driver" "${bridge_driver:-none}" "$(json_get /tmp/bg.flat ".bound.$BRIDGE")"
check_eq "the group is viable after the bind" true "$(json_get /tmp/bg.flat .viableAfterBind)"
check_eq "restored: e1000 back on e1000" e1000 "$(json_get /tmp/bg.flat ".restored.$E1000")"
check_eq "restored: edu back on ${before_edu:-none}" "${before_edu:-none}" "$(json_get /tmp/bg.flat ".restored.$EDU2")"
check_eq "sysfs agrees: e1000 on e1000" e1000 "$(dev_driver $E1000)"
check_eq "sysfs agrees: edu unchanged" "$before_edu" "$(dev_driver $EDU2)"
# With no entry left the journal file is gone.
if [ -e /run/vfioctl/journal.jsonl ]; then
    fail "journal entries left: $(cat /run/vfioctl/journal.jsonl)"
else
    ok "no journal entries left"
fi

vga_before=$(dev_driver $VGA)
bind-group $VGA >/tmp/vga.json 2>/tmp/vga.err
check_eq "the boot display is refused (exit 3)" 3 "$?"
json_flat </tmp/vga.json >/tmp/vga.flat
grep -q 'boot' /tmp/vga.flat && ok "the refusal names the boot display: $(grep refusals /tmp/vga.flat | head -n 1)" || fail "refusal without evidence: $(cat /tmp/vga.json)"
check_eq "the display's driver is unchanged" "$vga_before" "$(dev_driver $VGA)"
lab_finish
