# hugefault-placement: vfioctl's BAR placement gets the fewest mappings, and the fault planner
# predicts the kernel's huge-fault handler calls exactly. For ivshmem's 2 GiB BAR2 (physically
# 2 GiB aligned), `vfioctl bar touch` maps the BAR at vfioctl's placement plus a skew, reads one
# byte per page in a pattern, and prints the planner's prediction; hugefault-count counts the
# handler's calls by order and outcome with a kretprobe. They must agree count for count, for
# every skew and pattern below. At skew 0 the BAR must take exactly 2 PUD (1 GiB) mappings.
# lab: timeout 300
. /lab/bin/lab-lib.sh

IVSHMEM=0000:00:03.0
lab_bind $IVSHMEM vfio-pci || fail "could not bind $IVSHMEM to vfio-pci"

# The plan from sysfs alone agrees: 2 GiB aligned to 1 GiB, minimum 2 mappings, reached.
vfioctl bar plan $IVSHMEM --bar 2 --skew 4K --json | json_flat >/tmp/plan.flat || fail "bar plan exited $?"
check_eq "plan: alignment" 1073741824 "$(json_get /tmp/plan.flat '[0].alignment')"
check_eq "plan: fewest mappings" 2 "$(json_get /tmp/plan.flat '[0].minimum_mapping_count')"
check_eq "plan: vfioctl placement reaches it" true "$(json_get /tmp/plan.flat '[0].placements[0].reaches_minimum')"
check_eq "plan: 4 KiB skew never gets huge pages" true "$(json_get /tmp/plan.flat '[0].placements[3].never_huge')"

echo "table: skew pattern times | kprobe (order:outcome xN) | planner"
for skew in 0 0x1000 0x200000 0x201000 0x3fe00000; do
    for pattern in linear reverse random; do
        t0=$(cut -d' ' -f1 /proc/uptime)
        hugefault-count vfioctl bar touch $IVSHMEM --bar 2 --skew $skew --pattern $pattern >/tmp/touch.out 2>&1 ||
            fail "bar touch skew $skew $pattern exited $?: $(tail -n 3 /tmp/touch.out)"
        measured=$(grep '^hugefault order=' /tmp/touch.out | sed 's/^hugefault //; s/ ret=[0-9]*//' | sort | tr '\n' ' ')
        predicted=$(grep '^predicted order=' /tmp/touch.out | sed 's/^predicted //' | sort | tr '\n' ' ')
        ms=$(sed -n 's/^touched .* in \([0-9.]*\) ms$/\1/p' /tmp/touch.out)
        plan_ms=$(sed -n 's/.*(planned in \([0-9.]*\) ms)$/\1/p' /tmp/touch.out)
        wall=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }')
        echo "table: $skew $pattern touch ${ms}ms plan ${plan_ms}ms wall ${wall}s | $measured| $predicted"
        [ -n "$predicted" ] || fail "no prediction for skew $skew $pattern: $(tail -n 3 /tmp/touch.out)"
        check_eq "kprobe = planner, skew $skew, $pattern" "$predicted" "$measured"
        check_eq "no other outcomes or drops, skew $skew, $pattern" "other=0 dropped=0" \
            "$(sed -n 's/^hugefault total=.* \(other=.*\)/\1/p' /tmp/touch.out)"
        if [ "$skew" = 0 ]; then
            check_eq "vfioctl placement: 2 PUD mappings ($pattern)" "order=18 outcome=inserted count=2 " "$measured"
        fi
    done
done
lab_finish
