# sriov-vf-token: the SR-IOV NVMe's PF itself on vfio-pci. Without enable_sriov, `vfioctl sriov`
# is a clear error and nothing changes; with vfio-pci reloaded with enable_sriov=1, `sriov --vfs 2
# --vf-token UUID` sets the token through VFIO before writing sriov_numvfs, prints the name a VMM
# opens a VF by, and its check opens a VF through VFIO with the token while the kernel refuses it
# without (EACCES, "VF token required" in the kernel log); a random token when none is given.
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh
PF=0000:02:00.0
pfdir=$(sysfs_dev $PF)
TOKEN=2ab74924-c335-45f4-9b16-8569e5b08258
# reload_vfio_pci [PARAM]: vfio-pci with nothing bound to it, loaded again with PARAM.
reload_vfio_pci() {
    rmmod vfio_pci && insmod /lib/modules/vfio_pci.ko "$@"
}
cleanup() {
    [ "$(cat $pfdir/sriov_numvfs 2>/dev/null)" = 0 ] || vfioctl sriov $PF --vfs 0 >/dev/null 2>&1
    [ "$(dev_driver $PF)" = vfio-pci ] && vfioctl unbind $PF >/dev/null 2>&1
    [ "$(cat /sys/module/vfio_pci/parameters/enable_sriov 2>/dev/null)" = Y ] && reload_vfio_pci
    lab_restore
}
trap cleanup EXIT

check_eq "PF on nvme" nvme "$(dev_driver $PF)"
check_eq "nothing else on vfio-pci" "" "$(ls /sys/bus/pci/drivers/vfio-pci | grep ':')"
vfioctl bind $PF >/dev/null || fail "bind $PF exited $?"
check_eq "PF on vfio-pci" vfio-pci "$(dev_driver $PF)"

# vfio-pci as the lab loads it: enable_sriov=N. A clear error, nothing changed.
check_eq "enable_sriov off" N "$(cat /sys/module/vfio_pci/parameters/enable_sriov)"
out=$(vfioctl sriov $PF --vfs 2 --vf-token $TOKEN 2>&1); check_eq "without enable_sriov: exit 1" 1 "$?"
case "$out" in *"enable_sriov=1"*) ok "$out" ;; *) fail "without enable_sriov: $out" ;; esac
check_eq "no VFs" 0 "$(cat $pfdir/sriov_numvfs)"

vfioctl unbind $PF >/dev/null || fail "unbind $PF exited $?"
reload_vfio_pci enable_sriov=1 || fail "reloading vfio-pci with enable_sriov=1"
check_eq "enable_sriov on" Y "$(cat /sys/module/vfio_pci/parameters/enable_sriov)"
vfioctl bind $PF >/dev/null || fail "bind $PF again exited $?"

dmesg -c >/dev/null
vfioctl sriov $PF --vfs 2 --vf-token $TOKEN --json >/tmp/token.json; status=$?
json_flat </tmp/token.json >/tmp/token.flat
check_eq "sriov --vfs 2 --vf-token: exit 0" 0 "$status"
check_eq "2 VFs" 2 "$(cat $pfdir/sriov_numvfs)"
check_eq "token reported" $TOKEN "$(json_get /tmp/token.flat .vf_token)"
vf0=$(basename "$(readlink $pfdir/virtfn0)")
check_eq "VF 0 on vfio-pci" vfio-pci "$(dev_driver $vf0)"
check_eq "checked on VF 0" "$vf0" "$(json_get /tmp/token.flat .vf_token_check.vf)"
check_eq "VF opens with the token" true "$(json_get /tmp/token.flat .vf_token_check.opens_with_token)"
refused=$(json_get /tmp/token.flat .vf_token_check.refused_without)
case "$refused" in *ermission*|*EACCES*) ok "refused without: $refused" ;; *) fail "without the token: $refused" ;; esac
dmesg | grep -q "VF token required to access device" && ok "kernel: VF token required" || fail "no 'VF token required' in the kernel log"
vfioctl sriov $PF --vfs 0 >/dev/null || fail "--vfs 0 exited $?"

# No --vf-token: a random one, printed with the VF's name for the VMM.
vfioctl sriov $PF --vfs 1 >/tmp/token.txt || fail "sriov --vfs 1 exited $?"
cat /tmp/token.txt
token=$(awk '/^VF token: / { print $3 }' /tmp/token.txt)
echo "$token" | grep -Eq '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' && ok "random token $token" || fail "token '$token'"
vf0=$(basename "$(readlink $pfdir/virtfn0)")
grep -q "\"$vf0 vf_token=$token\"" /tmp/token.txt && ok "VMM device name printed" || fail "no \"$vf0 vf_token=$token\" line"
grep -q "token check: $vf0 opens with the token; without it: refused" /tmp/token.txt && ok "token check" || fail "token check line"
vfioctl sriov $PF --vfs 0 >/dev/null || fail "--vfs 0 exited $?"
check_eq "VFs removed" 0 "$(cat $pfdir/sriov_numvfs)"
lab_finish
