# walkthrough: the README's first-time journey, run for real: is the host ready (doctor), which
# groups can be assigned (groups), what is this device (show), what would binding do (bind
# --dry-run), the boot display refused, bind, the group is now viable, the device works through
# VFIO (irq test; vm-smoke from the lab's probe tool), and unbind gives it back. The output between the "walk:" markers is
# what the README quotes; the checks make sure the story stays true.
. /lab/bin/lab-lib.sh

NIC=0000:00:04.0 VGA=0000:00:01.0
step() { echo "walk: \$ $*"; "$@" 2>&1 | sed 's/^/walk: /'; }

echo "walk: ---"
step vfioctl doctor
vfioctl doctor >/dev/null 2>&1; check_eq "doctor says ready (exit 0)" 0 "$?"
step vfioctl groups
step vfioctl show $NIC
step vfioctl bind $NIC --dry-run
step vfioctl bind $VGA
vfioctl bind $VGA >/dev/null 2>&1; check_eq "the boot display is refused (exit 3)" 3 "$?"
step vfioctl bind $NIC
check_eq "the NIC is on vfio-pci" vfio-pci "$(dev_driver $NIC)"
vfioctl groups --json | json_flat >/tmp/g.flat
i=$(grep "^\[[0-9]*\]\.group=$(dev_group $NIC)\$" /tmp/g.flat | sed 's/^\[\([0-9]*\)\].*/\1/')
check_eq "its group is viable now" true "$(json_get /tmp/g.flat "[$i].viable")"
step vfioctl irq test $NIC --index msix
step vfioctl-lab-probe vm-smoke $NIC --toggle
vfioctl-lab-probe vm-smoke $NIC --toggle >/dev/null 2>&1; check_eq "vm-smoke --toggle passes" 0 "$?"
step vfioctl unbind $NIC
check_eq "the NIC is back on e1000e" e1000e "$(dev_driver $NIC)"
echo "walk: ---"
lab_finish
