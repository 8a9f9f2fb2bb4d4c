# bind-bridge-group: the pci-bridge group (00:06.0 with e1000 01:01.0 and edu 01:02.0). Binding
# the edu alone succeeds but says the group is still not viable and names the e1000; `--group`
# binds both endpoints, leaves the bridge on its own driver, and the group becomes viable.
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh
trap 'vfioctl restore --all >/dev/null 2>&1; lab_restore' EXIT

BRIDGE=0000:00:06.0 NIC=0000:01:01.0 EDU=0000:01:02.0
group=$(dev_group "$EDU")
bridge_driver=$(dev_driver "$BRIDGE")
nic_driver=$(dev_driver "$NIC")
check_eq "bridge and e1000 share the edu's group" "$group $group" "$(dev_group "$BRIDGE") $(dev_group "$NIC")"

vfioctl bind "$EDU" >/tmp/one.txt 2>&1
check_eq "bind of the edu alone: exit status" 0 "$?"
cat /tmp/one.txt
if grep -q "group $group is still not viable: also bind $NIC" /tmp/one.txt; then
    ok "the bind names the sibling that still blocks the group"
else
    fail "no note naming $NIC as the remaining blocker"
fi
vfioctl groups --json | json_flat >/tmp/groups.flat
viable=$(field_of /tmp/groups.flat group "$group" viable)
check_eq "group $group viable after binding the edu alone" false "$viable"

vfioctl bind "$EDU" --group --json | json_flat >/tmp/group.flat
check_eq "bind --group: e1000 action" bound "$(field_of /tmp/group.flat address "$NIC" action)"
check_eq "bind --group: edu action" unchanged "$(field_of /tmp/group.flat address "$EDU" action)"
if grep -q "=$BRIDGE\$" /tmp/group.flat; then fail "bind --group touched the bridge"; else ok "bind --group left the bridge out"; fi
check_eq "e1000 driver" vfio-pci "$(dev_driver "$NIC")"
check_eq "edu driver" vfio-pci "$(dev_driver "$EDU")"
check_eq "bridge driver unchanged" "$bridge_driver" "$(dev_driver "$BRIDGE")"
vfioctl groups --json | json_flat >/tmp/groups.flat
viable=$(field_of /tmp/groups.flat group "$group" viable)
check_eq "group $group viable after bind --group" true "$viable"

vfioctl unbind "$EDU" --group >/tmp/unbind.txt 2>&1
check_eq "unbind --group: exit status" 0 "$?"
check_eq "e1000 back on its driver" "$nic_driver" "$(dev_driver "$NIC")"
check_eq "edu back on no driver" "" "$(dev_driver "$EDU")"
lab_finish
