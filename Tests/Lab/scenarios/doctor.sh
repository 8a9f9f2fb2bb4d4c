# doctor: `vfioctl doctor` on a host that is ready for passthrough (the lab guest: emulated
# Intel IOMMU with interrupt remapping, vfio modules, /dev/vfio/vfio, nested KVM), with its
# findings: the boot VGA needs --force, the bridge group needs --group, kernel facts by version.
. /lab/bin/lab-lib.sh
. /lab/bin/bind-lib.sh

vfioctl doctor --json >/tmp/doctor.json 2>/tmp/doctor.err
rc=$?
cat /tmp/doctor.err
json_flat </tmp/doctor.json >/tmp/doctor.flat
check_eq "doctor exit status (ready)" 0 "$rc"
verdict=$(json_get /tmp/doctor.flat .verdict)
case $verdict in ok | info | warning) ok "verdict $verdict" ;; *) fail "verdict $verdict" ;; esac
check_eq "IOMMU finding" ok "$(field_of /tmp/doctor.flat id iommu.enabled status)"
check_eq "interrupt remapping finding" ok "$(field_of /tmp/doctor.flat id iommu.interrupt-remapping status)"
check_eq "vfio modules finding" ok "$(field_of /tmp/doctor.flat id vfio.modules status)"
check_eq "/dev/vfio/vfio finding" ok "$(field_of /tmp/doctor.flat id vfio.container status)"
check_eq "KVM finding" ok "$(field_of /tmp/doctor.flat id kvm status)"
check_eq "huge-fault alignment fix (6.12.95 and 7.3.4 have it)" ok "$(field_of /tmp/doctor.flat id kernel.huge-fault-alignment status)"
# The std VGA is the boot display: assignable only with --force, and said so.
check_eq "boot VGA remedy" "vfioctl bind 0000:00:01.0 --force" "$(field_of /tmp/doctor.flat id gpu.0000:00:01.0 remedy)"
check_eq "boot VGA status" warning "$(field_of /tmp/doctor.flat id gpu.0000:00:01.0 status)"
# The THP finding follows the host's mode and kernel, as `bar plan` models them: in each mode,
# the finding is ok exactly where a mapping without MADV_HUGEPAGE (QEMU's) still gets huge faults,
# and a warning with the fix where it does not.
THP=/sys/kernel/mm/transparent_hugepage/enabled
boot_mode=$(sed -n 's/.*\[\([a-z]*\)\].*/\1/p' $THP)
for mode in always madvise never; do
    echo "$mode" >$THP
    vfioctl doctor --json 2>/dev/null | json_flat >/tmp/doctor-thp.flat
    vfioctl bar plan 0000:00:03.0 --bar 2 --json | json_flat >/tmp/plan-thp.flat
    plain=$(json_get /tmp/plan-thp.flat '[0].huge_faults_without_madvise.huge_faults')
    status=$(field_of /tmp/doctor-thp.flat id kernel.thp-bar-mappings status)
    expected=warning; [ "$plain" = true ] && expected=ok
    check_eq "THP $mode: doctor's kernel.thp-bar-mappings ($(json_get /tmp/plan-thp.flat '[0].huge_faults_without_madvise.rule'))" "$expected" "$status"
    if [ "$expected" = warning ]; then
        field_of /tmp/doctor-thp.flat id kernel.thp-bar-mappings remedy | grep -q transparent_hugepage/enabled &&
            ok "THP $mode: the remedy names the setting" || fail "THP $mode: no remedy"
    fi
done
echo "$boot_mode" >$THP
# The text form carries the same, with the fix lines.
vfioctl doctor >/tmp/doctor.txt 2>&1
cat /tmp/doctor.txt
grep -q "fix: vfioctl bind 0000:00:01.0 --force" /tmp/doctor.txt && ok "text names the bind line" || fail "text lacks the bind line"
grep -q "^verdict: ready" /tmp/doctor.txt && ok "text verdict ready" || fail "text verdict: $(grep verdict /tmp/doctor.txt)"

# Version findings (KernelHistory.versionFacts) for this kernel (the guest has no QEMU).
release=$(uname -r)
kernel_lacks() { field_of /tmp/doctor.flat id "version.linux.$1" status; }
case $release in
    6.12.*)
        check_eq "6.12 lacks 6.15's PFNMAP walk by level" info "$(kernel_lacks type1-pfnmap-levels)"
        check_eq "6.12 lacks 6.19's dma-buf P2P" info "$(kernel_lacks dmabuf-p2p)"
        check_eq "6.12 has huge faults" "" "$(kernel_lacks vfio-huge-fault)" ;;
    7.*)
        for fact in vfio-huge-fault type1-pfnmap-levels dmabuf-p2p; do check_eq "$release has $fact" "" "$(kernel_lacks $fact)"; done ;;
    *) fail "no expectation for kernel $release" ;;
esac
grep '\.title=Linux ' /tmp/doctor.flat | sed 's/^[^=]*=/doctor-version: /'
lab_finish
