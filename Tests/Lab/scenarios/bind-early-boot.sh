# bind-early-boot: a second boot with the files `vfioctl persist add --early` generated. First
# boot (lab.phase=generate): the files for the e1000e are written and handed to the host, which
# puts the init-top script and the modprobe.d softdep into the guest's initramfs. Second boot
# (lab.phase=verify): /init ran the script before loading any module, then loaded vfio-pci and
# e1000e as it always does: the e1000e is on vfio-pci although e1000e is loaded, and e1000e never
# probed it (nothing in the kernel log).
# lab: early-boot
. /lab/bin/lab-lib.sh
NET=0000:00:04.0
dev=$(sysfs_dev $NET)
R=/tmp/early-root
phase=$(sed -n 's/.*lab\.phase=\([a-z]*\).*/\1/p' /proc/cmdline)

if [ "$phase" = generate ]; then
    check_eq "e1000e on its driver" e1000e "$(dev_driver $NET)"
    mkdir -p $R/usr/sbin && printf '#!/bin/sh\nexit 0\n' >$R/usr/sbin/update-initramfs && chmod 755 $R/usr/sbin/update-initramfs
    vfioctl persist add $NET --early --config-root $R --rules-dir $R/rules || fail "persist add --early exited $?"
    # What initramfs-tools' hook and mkinitramfs put into the initramfs, at their paths there.
    for pair in etc/initramfs-tools/scripts/init-top/00-vfioctl-early=scripts/init-top/00-vfioctl-early \
                etc/modprobe.d/vfioctl-early.conf=etc/modprobe.d/vfioctl-early.conf; do
        src=$R/${pair%%=*}
        [ -f "$src" ] || { fail "no $src"; continue; }
        echo "@@lab file ${pair#*=}"
        sed 's/^/@@lab line /' "$src"
    done
    vfioctl persist remove $NET --config-root $R --rules-dir $R/rules >/dev/null
    lab_finish
fi

check_eq "second boot" verify "$phase"
[ -x /scripts/init-top/00-vfioctl-early ] && ok "the init-top script is in this initramfs" || fail "no init-top script in the initramfs"
grep -qx 'softdep e1000e pre: vfio-pci' /etc/modprobe.d/vfioctl-early.conf && ok "softdep in the initramfs" || fail "no softdep in the initramfs"
check_eq "driver_override from the initramfs" vfio-pci "$(cat $dev/driver_override)"
[ -e /sys/module/e1000e ] && ok "e1000e is loaded" || fail "e1000e is not loaded"
check_eq "the e1000e came up on vfio-pci" vfio-pci "$(dev_driver $NET)"
[ -c "/dev/vfio/$(dev_group $NET)" ] && ok "/dev/vfio/$(dev_group $NET)" || fail "no /dev/vfio node"
dmesg | grep -q "e1000e $NET" && fail "e1000e probed $NET: $(dmesg | grep "e1000e $NET" | head -n 1)" || ok "e1000e never probed $NET"
# Give the NIC back for whatever runs after.
echo >"$dev/driver_override"; echo $NET >"$dev/driver/unbind"; echo $NET >/sys/bus/pci/drivers_probe
check_eq "back on e1000e" e1000e "$(dev_driver $NET)"
# The log line looked for above is what e1000e's probe prints.
dmesg | grep -q "e1000e $NET" && ok "e1000e's probe now logged" || fail "e1000e's probe logs no 'e1000e $NET' line: the check above proves nothing"
lab_finish
