# boot-binding-driverctl: Debian's driverctl package (unpacked, not installed: its script under
# /lab/driverctl, its udev rule copied to /lib/udev/rules.d) takes the e1000e with its own
# `set-override ... vfio-pci`, which binds it now and saves /etc/driverctl.d/pci-ADDRESS for its
# udev rule at boot. `persist list` and `persist check` name driverctl and that file for the
# device; `persist add` for it says what it leaves in place. An override saved for an address
# with no device is named with its file. `unset-override` gives the NIC back to e1000e.
. /lab/bin/lab-lib.sh
NET=0000:00:04.0 GONE=0000:00:09.0
DRIVERCTL=/lab/driverctl/usr/sbin/driverctl
RULES=/etc/udev/rules.d
cleanup() {
    bash $DRIVERCTL unset-override $NET >/dev/null 2>&1
    vfioctl persist remove $NET >/dev/null 2>&1
    rm -rf /etc/driverctl.d /lib/udev/rules.d/05-driverctl.rules
    [ -n "$made_dep" ] && rm -f "$made_dep"
    lab_restore
}
trap cleanup EXIT

# driverctl loads the driver with /sbin/modprobe unless /sys/module/<driver> exists, and the
# module directory is vfio_pci, not vfio-pci: busybox's modprobe needs a modules.dep to find
# vfio_pci loaded already (the lab loads modules with insmod and writes none).
made_dep=
dep=/lib/modules/$(uname -r)/modules.dep
if [ ! -e "$dep" ]; then mkdir -p "$(dirname "$dep")"; : >"$dep"; made_dep=$dep; fi

mkdir -p /lib/udev/rules.d
cp /lab/driverctl/lib/udev/rules.d/05-driverctl.rules /lib/udev/rules.d/
check_eq "e1000e on its driver at first" e1000e "$(dev_driver $NET)"
out=$(bash $DRIVERCTL set-override $NET vfio-pci 2>&1) || fail "driverctl set-override: $out"
check_eq "driver after driverctl set-override" vfio-pci "$(dev_driver $NET)"
check_eq "driverctl's saved override" vfio-pci "$(cat /etc/driverctl.d/pci-$NET 2>&1)"

vfioctl persist list >/tmp/list.out 2>&1
grep -q "^$NET  driverctl → vfio-pci (/etc/driverctl.d/pci-$NET:1)" /tmp/list.out && ok "persist list names driverctl and its file" || fail "persist list: $(cat /tmp/list.out)"
vfioctl persist list --json 2>/dev/null | json_flat >/tmp/list.flat
grep -q '^\[0\]\.mechanism=driverctl$' /tmp/list.flat && ok "persist list --json: mechanism driverctl" || fail "persist list --json: $(cat /tmp/list.flat)"
vfioctl persist check $NET >/tmp/check.out 2>&1
grep -q "driverctl" /tmp/check.out && grep -q "/etc/driverctl.d/pci-$NET" /tmp/check.out && ok "persist check names driverctl and its file" || fail "persist check: $(cat /tmp/check.out)"
vfioctl persist add $NET >/tmp/add.out 2>&1 || fail "persist add beside driverctl's vfio-pci: $(cat /tmp/add.out)"
grep -q "left in place: driverctl → vfio-pci (/etc/driverctl.d/pci-$NET:1)" /tmp/add.out && ok "persist add names the driverctl override it leaves in place" || fail "persist add: $(cat /tmp/add.out)"
vfioctl persist check $NET >/tmp/check2.out 2>&1
grep -q "by 2 mechanisms" /tmp/check2.out && ok "persist check: two mechanisms for one device" || fail "persist check after add: $(cat /tmp/check2.out)"
vfioctl persist remove $NET >/dev/null 2>&1

# An override driverctl saved for a device that is gone.
echo vfio-pci >/etc/driverctl.d/pci-$GONE
vfioctl persist list >/tmp/gone.out 2>&1
grep -q "/etc/driverctl.d/pci-$GONE:1: driverctl binds $GONE to vfio-pci, but no device $GONE exists" /tmp/gone.out && ok "an override for a missing device is named with its file" || fail "persist list: $(cat /tmp/gone.out)"
rm -f /etc/driverctl.d/pci-$GONE

out=$(bash $DRIVERCTL unset-override $NET 2>&1) || fail "driverctl unset-override: $out"
check_eq "driver after driverctl unset-override" e1000e "$(dev_driver $NET)"
vfioctl persist list >/tmp/after.out 2>&1
grep -q driverctl /tmp/after.out && fail "persist list still names driverctl: $(cat /tmp/after.out)" || ok "persist list no longer names driverctl"
lab_finish
