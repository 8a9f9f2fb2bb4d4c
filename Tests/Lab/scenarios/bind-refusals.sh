# bind-refusals: devices the host depends on are refused without --force, with the evidence, and
# nothing changes: the e1000e once it is up with an address and a route, the NVMe controller once
# its namespace carries a mounted filesystem, the boot VGA, and a bridge.
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh
NET=0000:00:04.0 NVME=0000:00:05.0 VGA=0000:00:01.0 BRIDGE=0000:00:06.0
iface=$(ls "$(sysfs_dev $NET)/net" 2>/dev/null | head -n 1)
cleanup() {
    umount /mnt/lab-nvme 2>/dev/null
    [ -n "$iface" ] && { ip route flush dev "$iface"; ip addr flush dev "$iface"; ip link set "$iface" down; } 2>/dev/null
    vfioctl restore --all >/dev/null 2>&1
    lab_restore
}
trap cleanup EXIT

# refused DEVICE KIND EVIDENCE-SUBSTRING: bind must exit 3, name the evidence, change nothing.
refused() {
    dev=$1 driver=$(dev_driver "$1") override=$(cat "$(sysfs_dev "$1")/driver_override")
    vfioctl bind "$dev" --json >/tmp/refuse.json 2>/tmp/refuse.err
    rc=$?
    json_flat </tmp/refuse.json >/tmp/refuse.flat
    check_eq "$2: exit status" 3 "$rc"
    check_eq "$2: action" refused "$(json_get /tmp/refuse.flat '[0].action')"
    reason=$(json_get /tmp/refuse.flat '[0].reason')
    case $reason in *"$3"*) ok "$2: reason names '$3'" ;; *) fail "$2: reason '$reason' lacks '$3'" ;; esac
    check_eq "$2: driver unchanged" "$driver" "$(dev_driver "$dev")"
    check_eq "$2: driver_override unchanged" "$override" "$(cat "$(sysfs_dev "$dev")/driver_override")"
    no_journal_entry "$dev" && ok "$2: journal untouched" || fail "$2: journal has an entry"
}

# The NIC carrying an address and a route (TEST-NET addresses; the NIC has no backend at all).
[ -n "$iface" ] || fail "no network interface on $NET"
ip link set "$iface" up && ip addr add 192.0.2.10/24 dev "$iface" && ip route add 198.51.100.0/24 dev "$iface" ||
    fail "could not configure $iface"
refused "$NET" "e1000e with a route" "$iface"
case $(json_get /tmp/refuse.flat '[0].reason') in *198.51.100.0/24*) ok "the route is named" ;; *) fail "the route is not named" ;; esac
# --dry-run with --force says what it would do and still changes nothing.
vfioctl bind "$NET" --force --dry-run --json | json_flat >/tmp/dry.flat
check_eq "forced dry run" would-bind "$(json_get /tmp/dry.flat '[0].action')"
check_eq "forced dry run changed nothing" e1000e "$(dev_driver "$NET")"
ip route flush dev "$iface"; ip addr flush dev "$iface"; ip link set "$iface" down

# The NVMe namespace formatted and mounted.
ns=$(ls /sys/block | grep '^nvme' | head -n 1)
if [ -n "$ns" ] && mke2fs -q "/dev/$ns" && mkdir -p /mnt/lab-nvme && mount -t ext2 "/dev/$ns" /mnt/lab-nvme; then
    refused "$NVME" "mounted NVMe" "/mnt/lab-nvme"
    umount /mnt/lab-nvme
else
    fail "could not make and mount a filesystem on the NVMe namespace (${ns:-none})"
fi

refused "$VGA" "boot VGA" "boot_vga=1"
refused "$BRIDGE" "bridge" "bridge"

# Once the NIC is down again the same bind goes through.
vfioctl bind "$NET" --json | json_flat >/tmp/after.flat
check_eq "e1000e bind once unused" bound "$(json_get /tmp/after.flat '[0].action')"
vfioctl unbind "$NET" >/dev/null
check_eq "e1000e back" e1000e "$(dev_driver "$NET")"
lab_finish
