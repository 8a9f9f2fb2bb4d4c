# example-inspect-groups: examples/inspect-groups (the PCIInventory library used directly)
# prints the lab's IOMMU groups as JSON; its groups, members and viability must equal what
# `vfioctl groups --json` says, and the bridge group must be blocked by the e1000 behind it.
. /lab/bin/lab-lib.sh

inspect-groups >/tmp/inspect.json || fail "inspect-groups exited $?"
json_flat </tmp/inspect.json >/tmp/inspect.flat
vfioctl groups --json | json_flat >/tmp/groups.flat || fail "vfioctl groups exited $?"
count() { grep -c "^\[[0-9]*\]\.$2=" "$1"; }
check_eq "as many groups as vfioctl groups" "$(count /tmp/groups.flat group)" "$(count /tmp/inspect.flat group)"
check_eq "the same groups" "$(grep '^\[[0-9]*\]\.group=' /tmp/groups.flat | cut -d= -f2 | sort -n | tr '\n' ' ')" \
    "$(grep '^\[[0-9]*\]\.group=' /tmp/inspect.flat | cut -d= -f2 | sort -n | tr '\n' ' ')"
check_eq "the same viable groups" "$(grep '^\[[0-9]*\]\.viable=true' /tmp/groups.flat | wc -l)" "$(grep '^\[[0-9]*\]\.viable=true' /tmp/inspect.flat | wc -l)"
BRIDGE_GROUP=$(dev_group 0000:01:01.0)
i=$(grep "^\[[0-9]*\]\.group=$BRIDGE_GROUP\$" /tmp/inspect.flat | sed 's/^\[\([0-9]*\)\].*/\1/')
check_eq "the bridge group has three members" 3 "$(grep -c "^\[$i\]\.devices\[" /tmp/inspect.flat)"
grep -q "^\[$i\]\.blockers\[[0-9]*\]=0000:01:01.0: " /tmp/inspect.flat && ok "the e1000 behind the bridge blocks it" ||
    fail "no blocker 0000:01:01.0 in group $BRIDGE_GROUP: $(grep "^\[$i\]\." /tmp/inspect.flat | tr '\n' ' ')"
lab_finish
