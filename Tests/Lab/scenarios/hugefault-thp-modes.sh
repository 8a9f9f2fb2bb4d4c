# hugefault-thp-modes: the THP mode, a mapping's MADV_HUGEPAGE and the kernel decide whether
# vfio-pci's huge_fault handler is ever called with a huge order, and `bar touch` predicts the
# kernel's histogram exactly under each. For every mode (always, madvise, never), with vfioctl's
# advice (MADV_HUGEPAGE) and without it (--no-madvise, as QEMU maps BARs), at vfioctl's placement
# and 2 MiB off it (a 1 GiB window of ivshmem's BAR2), the kprobe histogram must equal the planner's prediction, and where the
# planner says huge faults are tried, vfioctl's placement must reach the fewest mappings. No
# expectation is written here per mode or per kernel: each comes from `bar touch --json`.
# lab: timeout 300
. /lab/bin/lab-lib.sh

IVSHMEM=0000:00:03.0
THP=/sys/kernel/mm/transparent_hugepage/enabled
lab_bind $IVSHMEM vfio-pci || fail "could not bind $IVSHMEM to vfio-pci"
[ -w $THP ] || { fail "no writable $THP"; lab_finish; }
boot_mode=$(sed -n 's/.*\[\([a-z]*\)\].*/\1/p' $THP)
restore_mode() { echo "$boot_mode" >$THP; lab_restore; }
trap restore_mode EXIT
echo "kernel $(uname -r); THP mode at boot: $boot_mode"

echo "table: kernel mode madvise skew | rule huge | measured (order:outcome xN) | touch ms"
for mode in always madvise never; do
    echo "$mode" >$THP || fail "cannot set THP mode $mode"
    check_eq "THP mode set" "$mode" "$(sed -n 's/.*\[\([a-z]*\)\].*/\1/p' $THP)"
    for advice in madvise no-madvise; do
        flag=; [ $advice = no-madvise ] && flag=--no-madvise
        for skew in 0 0x200000; do
            hugefault-count vfioctl bar touch $IVSHMEM --bar 2 --length 1G --skew $skew $flag --json >/tmp/thp.out 2>&1 ||
                { fail "bar touch $mode $advice skew $skew exited $?: $(tail -n 3 /tmp/thp.out)"; continue; }
            grep -v '^hugefault ' /tmp/thp.out | json_flat >/tmp/thp.flat || fail "unparsable JSON ($mode $advice $skew)"
            measured=$(grep '^hugefault order=' /tmp/thp.out | sed 's/^hugefault //; s/ ret=[0-9]*//' | sort | tr '\n' ' ')
            predicted=$(awk -F= '
                /^\.predicted\.calls\[[0-9]+\]\.order=/ { split($1, p, /[][]/); o[p[2]] = $2 }
                /^\.predicted\.calls\[[0-9]+\]\.outcome=/ { split($1, p, /[][]/); u[p[2]] = $2 }
                /^\.predicted\.calls\[[0-9]+\]\.count=/ { split($1, p, /[][]/); c[p[2]] = $2 }
                END { for (i in o) printf "order=%s outcome=%s count=%s\n", o[i], u[i], c[i] }' /tmp/thp.flat | sort | tr '\n' ' ')
            rule=$(json_get /tmp/thp.flat .huge_faults.rule)
            huge=$(json_get /tmp/thp.flat .huge_faults.huge_faults)
            took=$(json_get /tmp/thp.flat .milliseconds)
            echo "table: $(uname -r | cut -d+ -f1) $mode $advice $skew | $rule $huge | $measured| ${took%.*}"
            [ -n "$predicted" ] || fail "no prediction ($mode $advice $skew)"
            check_eq "kprobe = planner: $mode, $advice, skew $skew" "$predicted" "$measured"
            check_eq "rule names the mode ($mode, $advice)" 1 "$(json_get /tmp/thp.flat .huge_faults.thp_mode | grep -c "^$mode$")"
            check_eq "no other outcomes ($mode $advice $skew)" "other=0 dropped=0" \
                "$(sed -n 's/^hugefault total=.* \(other=.*\)/\1/p' /tmp/thp.out)"
            if [ "$huge" = true ] && [ "$skew" = 0 ]; then
                inserted=$(sed -n 's/^hugefault total=[0-9]* inserted=\([0-9]*\) .*/\1/p' /tmp/thp.out)
                check_eq "huge faults tried: vfioctl's placement at the fewest mappings ($mode, $advice)" \
                    "$(json_get /tmp/thp.flat .minimum_mapping_count)" "$inserted"
            fi
        done
    done
done
lab_finish
