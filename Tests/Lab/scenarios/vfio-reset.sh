# vfio-reset: `vfioctl reset` through VFIO on the real kernel, each device checked to answer after:
# the e1000e's pm reset (its only method), the NVMe's FLR, and a hot reset of the bus behind the
# bridge with its affected set (e1000 and edu, one group); `--method bus` there becomes the hot
# reset. Refused (exit 3, nothing reset) while another process holds the group; edu, with no
# reset method of its own, is told to use --method hot.
. /lab/bin/lab-lib.sh
NET=0000:00:04.0 NVME=0000:00:05.0 EDU=0000:00:02.0 E1000=0000:01:01.0 EDU2=0000:01:02.0
holder=
cleanup() { [ -n "$holder" ] && kill "$holder" 2>/dev/null; vfioctl restore --all >/dev/null 2>&1; lab_restore; }
trap cleanup EXIT
# reset_ok NAME ARGS...: exit 0, every device answers with the vendor it had.
reset_ok() {
    name=$1; shift
    vfioctl reset "$@" --json >/tmp/reset.json 2>/tmp/reset.err
    check_eq "$name: exit status" 0 "$?"
    json_flat </tmp/reset.json >/tmp/reset.flat
    check_eq "$name: ok" true "$(json_get /tmp/reset.flat .ok)"
}
vendor() { sed 's/^0x//;s/^0*//' "$(sysfs_dev "$1")/vendor"; }

vfioctl bind $NET >/dev/null && vfioctl bind $NVME >/dev/null || fail "binding e1000e and NVMe"
reset_ok "e1000e" $NET
check_eq "e1000e method" pm "$(json_get /tmp/reset.flat .method)"
check_eq "e1000e vendor" "0x$(vendor $NET)" "$(json_get /tmp/reset.flat '.devices[0].vendor')"
reset_ok "NVMe flr" $NVME --method flr
check_eq "NVMe method" flr "$(json_get /tmp/reset.flat .method)"
check_eq "NVMe vendor" "0x$(vendor $NVME)" "$(json_get /tmp/reset.flat '.devices[0].vendor')"
vfioctl reset $NET --method flr >/dev/null 2>/tmp/reset.err
check_eq "e1000e has no flr: exit status" 1 "$?"
grep -q "offers no flr reset" /tmp/reset.err && ok "says which methods it has" || fail "stderr: $(cat /tmp/reset.err)"

vfioctl bind $E1000 --group >/dev/null || fail "binding the bridge's group"
reset_ok "bus behind the bridge" $E1000 --method hot
check_eq "hot method" hot "$(json_get /tmp/reset.flat .method)"
check_eq "affected 0" $E1000 "$(json_get /tmp/reset.flat '.devices[0].address')"
check_eq "affected 1" $EDU2 "$(json_get /tmp/reset.flat '.devices[1].address')"
check_eq "edu behind the bridge answers" true "$(json_get /tmp/reset.flat '.devices[1].answers')"
reset_ok "--method bus on a shared bus" $E1000 --method bus
check_eq "bus became hot" hot "$(json_get /tmp/reset.flat .method)"

group=$(dev_group $E1000)
sleep 600 <"/dev/vfio/$group" &
holder=$!
wait_for "/proc/$holder/fd/0"
vfioctl reset $E1000 --method hot >/tmp/held.out 2>&1
check_eq "held group: exit status" 3 "$?"
grep -q "pid $holder (sleep)" /tmp/held.out && ok "names the holder" || fail "output: $(cat /tmp/held.out)"
kill "$holder"; wait "$holder" 2>/dev/null; holder=

lab_bind $EDU vfio-pci || fail "binding edu"
vfioctl reset $EDU >/dev/null 2>/tmp/edu.err
check_eq "edu without a reset method: exit status" 1 "$?"
grep -q -- "--method hot" /tmp/edu.err && ok "points at --method hot" || fail "stderr: $(cat /tmp/edu.err)"
lab_finish
