# bind-concurrent: two binds of different devices started together both succeed, and the lock
# trace shows they never held the binding lock at the same time (each step is slowed down so an
# unlocked pair would certainly interleave). The hooks are set through `vfioctl-lab-probe
# with-test-hooks`, which runs the same commands; the shipping vfioctl reads no test variable.
. /lab/bin/lab-lib.sh
trap 'vfioctl restore --all >/dev/null 2>&1; lab_restore' EXIT
A=0000:00:02.0 B=0000:00:04.0
TRACE=/tmp/lock.trace
rm -f "$TRACE"
export VFIOCTL_LOCK_TRACE=$TRACE VFIOCTL_STEP_DELAY_MS=300
vfioctl-lab-probe with-test-hooks bind "$A" >/tmp/a.out 2>&1 & pa=$!
vfioctl-lab-probe with-test-hooks bind "$B" >/tmp/b.out 2>&1 & pb=$!
wait $pa; ra=$?
wait $pb; rb=$?
unset VFIOCTL_LOCK_TRACE VFIOCTL_STEP_DELAY_MS
cat /tmp/a.out /tmp/b.out "$TRACE"
check_eq "first bind exit status" 0 "$ra"
check_eq "second bind exit status" 0 "$rb"
check_eq "$A driver" vfio-pci "$(dev_driver "$A")"
check_eq "$B driver" vfio-pci "$(dev_driver "$B")"
# In time order the trace must alternate acquired/released, one holder at a time.
verdict=$(sort -k3,3n "$TRACE" | awk '
    $2 == "acquired" { if (holder != "") { print "overlap: " $1 " acquired while " holder " held it"; bad = 1 } holder = $1; n++ }
    $2 == "released" { if (holder != $1) { print "release by " $1 " while " holder " held it"; bad = 1 } holder = "" }
    END { if (!bad) print "serialized " n }')
check_eq "lock trace" "serialized 2" "$verdict"
vfioctl unbind "$A" >/dev/null && vfioctl unbind "$B" >/dev/null
check_eq "$B back on e1000e" e1000e "$(dev_driver "$B")"
lab_finish
