# vfio-info: what VFIO says about devices, through `vfioctl device info` (and its old name
# `bar info`, which must keep working for scripts): regions with their
# capability chains (mmap areas, MSI-X mappable), IRQ indexes, and VFIO_DEVICE_RESET where the
# device has a reset method (e1000e: PM reset) and a clear refusal where it has none (edu).
. /lab/bin/lab-lib.sh

E1000E=0000:00:04.0 EDU=0000:00:02.0
lab_bind $E1000E vfio-pci || fail "could not bind $E1000E to vfio-pci"
lab_bind $EDU vfio-pci || fail "could not bind $EDU to vfio-pci"

vfioctl bar info $E1000E --reset --json >/tmp/info.json 2>/tmp/alias.err || fail "bar info exited $?"
grep -q 'moved to `vfioctl device info`' /tmp/alias.err && ok "bar info still works and says where it moved" || fail "bar info: $(cat /tmp/alias.err)"
vfioctl device info $E1000E
json_flat </tmp/info.json >/tmp/info.flat
vfioctl device info $E1000E --json | json_flat >/tmp/device.flat || fail "device info exited $?"
# The same report under the new name (reset is null without --reset).
grep -v '^\.reset=' /tmp/info.flat >/tmp/info.noreset; grep -v '^\.reset=' /tmp/device.flat >/tmp/device.noreset
if cmp -s /tmp/info.noreset /tmp/device.noreset; then ok "device info = bar info, less the reset ($(wc -l </tmp/device.noreset) values)"
else fail "device info differs from bar info: $(diff /tmp/info.noreset /tmp/device.noreset | head -n 5)"; fi
check_eq "device info without --reset: reset is null" null "$(json_get /tmp/device.flat .reset)"
check_eq "e1000e: reset supported" true "$(json_get /tmp/info.flat .supports_reset)"
check_eq "e1000e: VFIO_DEVICE_RESET" done "$(json_get /tmp/info.flat .reset)"
# lspci names the BAR holding the MSI-X table; VFIO must either let it be mmapped whole
# (MSIX_MAPPABLE, with interrupt remapping) or leave the table out of the mmap areas.
table_bar=$(lspci -vv -s $E1000E 2>/dev/null | sed -n 's/.*Vector table: BAR=\([0-9]\).*/\1/p')
vectors=$(lspci -vv -s $E1000E 2>/dev/null | sed -n 's/.*MSI-X: .*Count=\([0-9]*\).*/\1/p')
[ -n "$table_bar" ] || fail "lspci shows no MSI-X table for $E1000E"
msix_mappable=$(json_get /tmp/info.flat ".regions[$table_bar].msix_mappable")
sparse=$(json_get /tmp/info.flat ".regions[$table_bar].sparse_areas[0].size")
if [ "$msix_mappable" = true ] || [ -n "$sparse" ]; then
    ok "MSI-X table BAR $table_bar: msix_mappable=$msix_mappable sparse_areas=$sparse"
else
    fail "MSI-X table BAR $table_bar has neither MSIX_MAPPABLE nor sparse areas"
fi
check_eq "MSI-X vectors (IRQ index 2) = lspci's count" "$vectors" "$(json_get /tmp/info.flat '.irqs[2].count')"
check_eq "INTx: one vector, maskable" "1 true" "$(json_get /tmp/info.flat '.irqs[0].count') $(json_get /tmp/info.flat '.irqs[0].maskable')"
check_eq "config region is index 7 and not mmappable" "7 false" "$(json_get /tmp/info.flat '.regions[7].index') $(json_get /tmp/info.flat '.regions[7].mappable')"

vfioctl device info $EDU --reset --json | json_flat >/tmp/edu.flat || fail "device info edu exited $?"
check_eq "edu: no reset method" false "$(json_get /tmp/edu.flat .supports_reset)"
case "$(json_get /tmp/edu.flat .reset)" in
    "refused: "*"has no reset method"*) ok "edu reset refused clearly: $(json_get /tmp/edu.flat .reset)" ;;
    *) fail "edu reset: $(json_get /tmp/edu.flat .reset)" ;;
esac
check_eq "edu BAR0: one mmap area, the whole 1 MiB" "0 1048576" "$(json_get /tmp/edu.flat '.regions[0].mmap_areas[0].offset') $(json_get /tmp/edu.flat '.regions[0].mmap_areas[0].size')"
lab_finish
