# sriov-persist: `vfioctl sriov --vfs 2 --persist` on the SR-IOV NVMe writes the PF's VF-count rule
# and one vfio-pci rule per VF; with systemd-udevd running, the VFs removed and the PF's driver
# bound again (as at boot), udev alone brings back 2 VFs, both on vfio-pci; `--vfs 0 --persist`
# removes every rule.
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh
PF=0000:02:00.0
pfdir=$(sysfs_dev $PF)
RULES=/etc/udev/rules.d
cleanup() {
    vfioctl sriov $PF --vfs 0 --persist >/dev/null 2>&1
    udevadm control --exit 2>/dev/null
    lab_restore
}
trap cleanup EXIT

mkdir -p /run/udev "$RULES"
/lib/systemd/systemd-udevd --daemon --resolve-names=never 2>/tmp/udevd.err || { cat /tmp/udevd.err; fail "systemd-udevd did not start"; }
udevadm control --ping --timeout=5 && ok "systemd-udevd answers" || fail "systemd-udevd does not answer"
check_eq "PF on nvme" nvme "$(dev_driver $PF)"

vfioctl sriov $PF --vfs 2 --persist || fail "sriov --vfs 2 --persist exited $?"
rule=$RULES/90-vfioctl-sriov-$PF.rules
grep -q 'ACTION=="bind".*ATTR{sriov_numvfs}="2"' "$rule" && ok "count rule written" || fail "no count rule in $rule"
vfs=""
for n in 0 1; do vfs="$vfs $(basename "$(readlink $pfdir/virtfn$n)")"; done
for vf in $vfs; do [ -e "$RULES/90-vfioctl-$vf.rules" ] && ok "rule for $vf" || fail "no rule for $vf"; done

# As at boot: no VFs, then the PF's driver binds.
vfioctl sriov $PF --vfs 0 || fail "sriov --vfs 0 exited $?"
check_eq "no VFs" 0 "$(cat $pfdir/sriov_numvfs)"
udevadm control --reload; udevadm settle --timeout=10
echo $PF >/sys/bus/pci/drivers/nvme/unbind
echo $PF >/sys/bus/pci/drivers/nvme/bind
udevadm settle --timeout=20
n=0
while [ "$(cat $pfdir/sriov_numvfs)" != 2 ] && [ $n -lt 50 ]; do usleep 100000; n=$((n + 1)); done
check_eq "udev restored the count" 2 "$(cat $pfdir/sriov_numvfs)"
for vf in $vfs; do
    n=0
    while [ "$(dev_driver $vf)" != vfio-pci ] && [ $n -lt 50 ]; do usleep 100000; n=$((n + 1)); done
    check_eq "$vf on vfio-pci through its rule" vfio-pci "$(dev_driver $vf)"
done

vfioctl sriov $PF --vfs 0 --persist || fail "sriov --vfs 0 --persist exited $?"
check_eq "VFs removed" 0 "$(cat $pfdir/sriov_numvfs)"
check_eq "no vfioctl rule left" "" "$(ls $RULES | grep vfioctl)"
lab_finish
