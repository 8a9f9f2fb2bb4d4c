# sriov-nvme: `vfioctl sriov` on QEMU's SR-IOV NVMe (PF 02:00.0 behind the root port 00:1f.5,
# on the nvme driver): VFs created with autoprobe off and every one bound to vfio-pci, each in a
# group of its own; 2 -> 3 goes through 0; show lists the VFs with their groups; a VF group held
# open refuses a change (nothing changed); bad input is a clear error; --vfs 0 removes them.
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh

PF=0000:02:00.0
pfdir=$(sysfs_dev $PF)
[ -e "$pfdir/sriov_totalvfs" ] || { fail "$PF has no sriov_totalvfs"; lab_finish; }
check_eq "PF on nvme" nvme "$(dev_driver $PF)"
check_eq "sriov_totalvfs" 4 "$(cat $pfdir/sriov_totalvfs)"
autoprobe=$(cat $pfdir/sriov_drivers_autoprobe)

vfioctl sriov $PF --vfs 2 || fail "sriov --vfs 2 exited $?"
check_eq "2 VFs" 2 "$(cat $pfdir/sriov_numvfs)"
check_eq "autoprobe restored" "$autoprobe" "$(cat $pfdir/sriov_drivers_autoprobe)"
for n in 0 1; do
    vf=$(basename "$(readlink $pfdir/virtfn$n)")
    check_eq "VF $n ($vf) on vfio-pci" vfio-pci "$(dev_driver $vf)"
    g=$(dev_group $vf)
    [ -e /dev/vfio/$g ] && ok "/dev/vfio/$g for $vf" || fail "no /dev/vfio/$g for $vf"
    check_eq "VF $n alone in its group" "$vf" "$(ls /sys/kernel/iommu_groups/$g/devices)"
    vfioctl show $PF | grep -q "VF $vf  group $g  driver vfio-pci" && ok "show lists $vf with group $g" || fail "show does not list $vf with group $g"
done

# A change while a VF's group is open (by a VFIO user) is refused and changes nothing.
vf0=$(basename "$(readlink $pfdir/virtfn0)")
g0=$(dev_group $vf0)
exec 9<>/dev/vfio/$g0
out=$(vfioctl sriov $PF --vfs 3 2>&1); status=$?
exec 9>&-
check_eq "open group: exit 3" 3 "$status"
case "$out" in *"/dev/vfio/$g0 is open"*) ok "refused: $out" ;; *) fail "refusal message: $out" ;; esac
check_eq "still 2 VFs" 2 "$(cat $pfdir/sriov_numvfs)"

# Bad input: a count above sriov_totalvfs, a device without SR-IOV. Nothing changes.
out=$(vfioctl sriov $PF --vfs 5 2>&1); check_eq "above total: exit 1" 1 "$?"
case "$out" in *"at most 4 VFs"*) ok "$out" ;; *) fail "above total: $out" ;; esac
out=$(vfioctl sriov 0000:00:02.0 --vfs 1 2>&1); check_eq "no SR-IOV: exit 1" 1 "$?"
case "$out" in *"no SR-IOV capability"*) ok "$out" ;; *) fail "no SR-IOV: $out" ;; esac
check_eq "still 2 VFs after bad input" 2 "$(cat $pfdir/sriov_numvfs)"

# 2 -> 3 goes through 0 (the kernel refuses a direct change).
vfioctl sriov $PF --vfs 3 --json | json_flat >/tmp/s.flat || fail "sriov --vfs 3 exited $?"
check_eq "3 VFs" 3 "$(cat $pfdir/sriov_numvfs)"
check_eq "three bound" "bound bound bound" "$(json_get /tmp/s.flat '.outcomes[0].action') $(json_get /tmp/s.flat '.outcomes[1].action') $(json_get /tmp/s.flat '.outcomes[2].action')"

vfioctl sriov $PF --vfs 0 || fail "sriov --vfs 0 exited $?"
check_eq "VFs removed" 0 "$(cat $pfdir/sriov_numvfs)"
check_eq "PF still on nvme" nvme "$(dev_driver $PF)"
check_eq "no journal entries left" "" "$(journal_flat | grep -o '\.address=.*')"
lab_finish
