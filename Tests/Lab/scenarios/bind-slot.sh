# bind-slot: `bind --slot` takes every function of a multi-function slot (the ICH9's LPC, AHCI and
# SMBus at 00:1f.*) in one run, journalled; `show` names the companions; `unbind --group` gives
# them all back.
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh
SATA=0000:00:1f.2
FUNCS="0000:00:1f.0 0000:00:1f.2 0000:00:1f.3"
cleanup() { vfioctl restore --all >/dev/null 2>&1; lab_restore; }
trap cleanup EXIT
before=""
for f in $FUNCS; do before="$before $f=$(dev_driver $f)"; done

vfioctl show $SATA >/tmp/show.txt
for f in 0000:00:1f.0 0000:00:1f.3; do
    grep -q "Companion: *$f" /tmp/show.txt && ok "show names companion $f" || fail "show lacks companion $f"
done

vfioctl bind $SATA --slot --json >/tmp/slot.json 2>/tmp/slot.err
check_eq "bind --slot: exit status" 0 "$?"
json_flat </tmp/slot.json >/tmp/slot.flat
i=0
for f in $FUNCS; do
    check_eq "outcome $i address" "$f" "$(json_get /tmp/slot.flat "[$i].address")"
    check_eq "$f bound" bound "$(json_get /tmp/slot.flat "[$i].action")"
    check_eq "$f on vfio-pci" vfio-pci "$(dev_driver $f)"
    no_journal_entry "$f" && fail "$f not in the journal" || ok "$f journalled"
    i=$((i + 1))
done
check_eq "group node" yes "$([ -e /dev/vfio/$(dev_group $SATA) ] && echo yes)"
vfioctl unbind $SATA --group >/dev/null 2>&1 || fail "unbind --group failed"
for f in $FUNCS; do
    check_eq "$f back" "$(echo "$before" | tr ' ' '\n' | grep "^$f=" | cut -d= -f2)" "$(dev_driver $f)"
done

lab_finish
