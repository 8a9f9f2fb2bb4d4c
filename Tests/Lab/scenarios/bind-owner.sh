# bind-owner: least privilege for a VMM that does not run as root. `bind --owner vmm` gives edu's
# group node (and its device file, where the kernel makes one) to vmm only, mode 0600; a VMM run
# as vmm (`su vmm`) opens the device and reads edu's ID register through VFIO, while `other`,
# another unprivileged user, is refused. doctor names vmm's memlock need and flags a node opened
# to everyone. `unbind` and `restore` give a node that stays (the bridge group, whose e1000 stays
# on vfio-pci) back to root. An unknown user is a clear error that changes nothing.
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh
trap 'vfioctl restore --all >/dev/null 2>&1; lab_restore' EXIT
EDU=0000:00:02.0 E1000=0000:01:01.0 EDU2=0000:01:02.0
as_user() { user=$1; shift; su -s /bin/sh "$user" -c "$*"; }
owner_of() { stat -c '%U:%G %a' "$1" 2>&1; }
read_id() { as_user "$1" "vfioctl bar read $2 --bar 0 --offset 0 --width 4"; }

# An unknown user: exit 1, the user named, nothing bound.
out=$(vfioctl bind $EDU --owner nosuchuser 2>&1); rc=$?
check_eq "bind --owner nosuchuser exit status" 1 "$rc"
case $out in *'no user "nosuchuser"'*"nothing was changed"*) ok "the error names the user: $out" ;; *) fail "unclear error: $out" ;; esac
check_eq "edu's driver after the refused bind" "" "$(dev_driver $EDU)"

vfioctl bind $EDU --owner vmm >/tmp/owner.out 2>&1; rc=$?
check_eq "bind --owner vmm exit status" 0 "$rc"
group=$(dev_group $EDU)
check_eq "owner of /dev/vfio/$group" "vmm:vmm 600" "$(owner_of /dev/vfio/$group)"
grep -q "VFIO nodes given to vmm:vmm, mode 0600: /dev/vfio/$group" /tmp/owner.out && ok "bind says which nodes it gave" || fail "bind's report: $(cat /tmp/owner.out)"
# 6.12 has sysfs vfio-dev/vfioN too, but a node only with CONFIG_VFIO_DEVICE_CDEV.
cdev=$(ls "$(sysfs_dev $EDU)/vfio-dev" 2>/dev/null)
if [ -n "$cdev" ] && [ -c "/dev/vfio/devices/$cdev" ]; then
    check_eq "owner of the device file /dev/vfio/devices/$cdev" "vmm:vmm 600" "$(owner_of /dev/vfio/devices/$cdev)"
else
    echo "no device file on this kernel (no CONFIG_VFIO_DEVICE_CDEV): only the group node to give"
fi
check_eq "edu's ID read by a VMM running as vmm" 0x010000ed "$(read_id vmm $EDU 2>&1)"
out=$(read_id other $EDU 2>&1) && fail "other opened the device: $out" || {
    case $out in *ermission*) ok "other is refused: $out" ;; *) fail "other failed, but not for permission: $out" ;; esac
}
grep -q '"node_owner"' /run/vfioctl/journal.jsonl && ok "the journal records the owner" || fail "no node_owner in the journal"

# doctor: vmm's memlock need named; a node opened to everyone is flagged.
vfioctl doctor --vm-memory 2G >/tmp/doctor.out 2>&1
grep -q "vmm's RLIMIT_MEMLOCK must be at least 3 GiB" /tmp/doctor.out && ok "doctor names vmm's memlock need (3 GiB for 2 GiB of RAM)" || fail "doctor: $(grep -i -A3 vmm /tmp/doctor.out)"
chmod 666 /dev/vfio/$group
vfioctl doctor >/tmp/doctor.out 2>&1
grep -q "/dev/vfio/$group 0666 vmm:vmm: every local user can open it" /tmp/doctor.out && ok "doctor flags the node opened to all" || fail "doctor misses the 0666 node: $(grep -A4 node-access /tmp/doctor.out)"
vfioctl bind $EDU --owner vmm >/dev/null 2>&1
check_eq "a second bind --owner closes it again" "vmm:vmm 600" "$(owner_of /dev/vfio/$group)"
vfioctl unbind $EDU >/dev/null 2>&1
[ -e /dev/vfio/$group ] && fail "/dev/vfio/$group left after unbind" || ok "edu's node went with its unbind"

# A node that outlives the device's return: e1000 (bound by hand, not by vfioctl) keeps the
# bridge group on vfio-pci while edu behind the bridge goes back.
lab_bind $E1000 vfio-pci || fail "could not bind $E1000 by hand"
bgroup=$(dev_group $EDU2)
vfioctl bind $EDU2 --owner vmm >/dev/null 2>&1 || fail "bind $EDU2 --owner vmm"
check_eq "owner of /dev/vfio/$bgroup after bind" "vmm:vmm 600" "$(owner_of /dev/vfio/$bgroup)"
check_eq "edu behind the bridge read as vmm" 0x010000ed "$(read_id vmm $EDU2 2>&1)"
vfioctl unbind $EDU2 >/dev/null 2>&1 || fail "unbind $EDU2"
check_eq "owner of /dev/vfio/$bgroup after unbind (e1000 keeps it)" "root:root 600" "$(owner_of /dev/vfio/$bgroup)"
read_id vmm $EDU2 >/dev/null 2>&1 && fail "vmm still opens the group after unbind" || ok "vmm no longer opens the group"
vfioctl bind $EDU2 --owner vmm >/dev/null 2>&1 || fail "bind $EDU2 --owner vmm again"
vfioctl restore --all >/dev/null 2>&1 || fail "restore --all"
check_eq "owner of /dev/vfio/$bgroup after restore" "root:root 600" "$(owner_of /dev/vfio/$bgroup)"
lab_finish
