# bind-early: `vfioctl persist add --early` for the e1000e writes the initramfs-tools files (into
# a scratch root); then the early boot is replayed as this guest allows (its own initramfs is not
# rebuilt): with e1000e and vfio-pci unloaded and the override cleared, as an initramfs finds the
# device, the generated init-top script runs as initramfs-tools runs it; the native module loaded
# first does not take the device, and vfio-pci takes it when it loads; loading in the softdep's
# order ends the same; a device a driver already holds is handed over by the script; `persist
# check` says early only once the initramfs is newer than the files; `persist remove` undoes all.
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh
NET=0000:00:04.0
R=/tmp/early-root
dev=$(sysfs_dev $NET)
DIRS="--config-root $R --rules-dir $R/rules"
cleanup() {
    vfioctl persist remove $NET $DIRS >/dev/null 2>&1
    echo >"$dev/driver_override"
    [ -e /sys/module/vfio_pci ] || insmod /lib/modules/vfio_pci.ko
    [ -e /sys/module/e1000e ] || insmod /lib/modules/e1000e.ko
    if [ "$(dev_driver $NET)" != e1000e ]; then
        [ -e "$dev/driver" ] && echo $NET >"$dev/driver/unbind"
        echo $NET >/sys/bus/pci/drivers_probe
    fi
    rm -rf $R
}
trap cleanup EXIT

check_eq "e1000e on its driver at first" e1000e "$(dev_driver $NET)"
mkdir -p $R/usr/sbin
printf '#!/bin/sh\nexit 0\n' >$R/usr/sbin/update-initramfs && chmod 755 $R/usr/sbin/update-initramfs

vfioctl persist add $NET --early $DIRS --json | json_flat >/tmp/early.flat || fail "persist add --early exited $?"
check_eq "tool detected" initramfs-tools "$(json_get /tmp/early.flat .early.initramfs)"
check_eq "native module" e1000e "$(json_get /tmp/early.flat .early.native_module)"
check_eq "command to run" "update-initramfs -u -k all" "$(json_get /tmp/early.flat .early.regenerate)"
script=$R/etc/initramfs-tools/scripts/init-top/00-vfioctl-early
grep -qx 'softdep e1000e pre: vfio-pci' $R/etc/modprobe.d/vfioctl-early.conf && ok "softdep e1000e pre: vfio-pci" || fail "no softdep line"
grep -q 'manual_add_modules vfio_iommu_type1 vfio_pci' $R/etc/initramfs-tools/hooks/vfioctl-early && ok "hook adds vfio-pci" || fail "hook misses vfio-pci"
grep -q "for vfioctl_addr in $NET; do" "$script" && ok "script keyed on $NET" || fail "script not keyed on $NET"
vfioctl persist check $NET $DIRS --modprobe-dir $R/etc/modprobe.d --json | json_flat >/tmp/check.flat
check_eq "initramfs not rebuilt: not early yet" false "$(json_get /tmp/check.flat .early)"

# The device as the initramfs finds it: no driver module loaded, no override.
check_eq "nothing else on vfio-pci" "" "$(ls /sys/bus/pci/drivers/vfio-pci | grep ':')"
rmmod e1000e || fail "rmmod e1000e"
rmmod vfio_pci || fail "rmmod vfio_pci"
echo >"$dev/driver_override"
check_eq "no driver before the script" "" "$(dev_driver $NET)"

# initramfs-tools asks each script for its prerequisites, then runs it.
check_eq "no prerequisites" "" "$(sh "$script" prereqs)"
sh "$script" || fail "the init-top script exited $?"
check_eq "override set by the script" vfio-pci "$(cat "$dev/driver_override")"
# Its modprobe of vfio-pci finds no module tree here, like udev's coldplug before any load.
check_eq "still no driver" "" "$(dev_driver $NET)"

# The native module first (no softdep honoured): it does not take the overridden device.
insmod /lib/modules/e1000e.ko || fail "insmod e1000e"
[ -e /sys/module/e1000e ] && ok "e1000e loaded" || fail "e1000e not loaded"
check_eq "e1000e loaded, device not taken" "" "$(dev_driver $NET)"
insmod /lib/modules/vfio_pci.ko || fail "insmod vfio-pci"
check_eq "vfio-pci takes it when it loads" vfio-pci "$(dev_driver $NET)"
[ -c "/dev/vfio/$(dev_group $NET)" ] && ok "/dev/vfio/$(dev_group $NET)" || fail "no /dev/vfio node"

# In the softdep's order, as modprobe e1000e loads it: vfio-pci, then e1000e.
rmmod e1000e; rmmod vfio_pci
check_eq "free again" "" "$(dev_driver $NET)"
for pre in $(awk '$1 == "softdep" && $2 == "e1000e" && $3 == "pre:" { for (i = 4; i <= NF; i++) print $i }' $R/etc/modprobe.d/vfioctl-early.conf); do
    insmod "/lib/modules/$(echo "$pre" | tr - _).ko" || fail "insmod $pre"
done
insmod /lib/modules/e1000e.ko || fail "insmod e1000e"
check_eq "softdep order: on vfio-pci with e1000e loaded" "vfio-pci yes" "$(dev_driver $NET) $([ -e /sys/module/e1000e ] && echo yes)"

# A driver that took the device before the script (one built into the kernel): handed over.
echo $NET >"$dev/driver/unbind"; echo >"$dev/driver_override"; echo $NET >/sys/bus/pci/drivers_probe
check_eq "back on e1000e" e1000e "$(dev_driver $NET)"
sh "$script" || fail "the init-top script exited $?"
check_eq "the script hands it to vfio-pci" vfio-pci "$(dev_driver $NET)"

# persist check: early once the running kernel's initramfs is newer than the files.
mkdir -p $R/boot && : >"$R/boot/initrd.img-$(uname -r)"
vfioctl persist check $NET $DIRS --modprobe-dir $R/etc/modprobe.d --json | json_flat >/tmp/check.flat
check_eq "will bind" true "$(json_get /tmp/check.flat .will_bind)"
check_eq "early" true "$(json_get /tmp/check.flat .early)"

vfioctl persist remove $NET $DIRS || fail "persist remove exited $?"
left=$(find $R/etc $R/usr/lib -type f 2>/dev/null)
check_eq "no early-binding file left" "" "$left"
vfioctl persist check $NET $DIRS --modprobe-dir $R/etc/modprobe.d >/dev/null; check_eq "check after remove" 2 "$?"
lab_finish
