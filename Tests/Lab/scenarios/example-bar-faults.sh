# example-bar-faults: examples/bar-faults (the VFIO and BARPlacement libraries used directly)
# maps ivshmem's 2 GiB BAR2 at vfioctl's placement, touches every page, and compares the fault
# planner's prediction with the kernel's huge-fault handler calls, which it counts itself with
# a kretprobe histogram. They must agree exactly: 2 PUD mappings at the placement, PMD-only
# with a 2 MiB skew, and 4 KiB pages only with a 4 KiB skew.
. /lab/bin/lab-lib.sh

IVSHMEM=0000:00:03.0
lab_bind $IVSHMEM vfio-pci || fail "could not bind $IVSHMEM to vfio-pci"
for skew in 0 2097152 4096; do
    bar-faults $IVSHMEM 2 $skew >/tmp/bf.out 2>&1
    rc=$?
    sed 's/^/  /' /tmp/bf.out
    check_eq "bar-faults skew $skew: kernel = planner (exit 0)" 0 "$rc"
    grep -q "the kernel did exactly what the planner predicted" /tmp/bf.out && ok "skew $skew: exact" || fail "skew $skew: no exact match reported"
    kernel_pud=$(awk '$1 == "order=18" && $2 == "outcome=inserted" { print $4 }' /tmp/bf.out)
    kernel_pmd=$(awk '$1 == "order=9" && $2 == "outcome=inserted" { print $4 }' /tmp/bf.out)
    case $skew in
        0) check_eq "skew 0: 2 PUD mappings counted by the kernel" 2 "$kernel_pud" ;;
        2097152) check_eq "skew 2 MiB: no PUD mapping" "" "$kernel_pud"; [ "${kernel_pmd:-0}" -gt 1000 ] && ok "skew 2 MiB: $kernel_pmd PMD mappings" || fail "skew 2 MiB: PMD count ${kernel_pmd:-none}" ;;
        4096) check_eq "skew 4 KiB: no PMD mapping" "" "$kernel_pmd" ;;
    esac
done
lab_finish
