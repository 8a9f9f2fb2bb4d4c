# dma-budget: a whole VM's DMA needs against the real container (edu on vfio-pci) and the host:
# the emulated IOMMU's 39-bit IOVA space, vfio_iommu_type1's dma_entry_limit (dma_avail 65535),
# memlock with N devices and a vIOMMU. Figures only change with the options; nothing is mapped
# beyond the usual test buffer.
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0
lab_bind $EDU vfio-pci || fail "could not bind $EDU to vfio-pci"

vfioctl dma check $EDU --vm-memory 16G --json | json_flat >/tmp/b.flat || fail "dma check --vm-memory 16G exited $?"
check_eq "39-bit IOVA space" 39 "$(json_get /tmp/b.flat .vm_budget.address_width)"
check_eq "16G fits the address space (RAM ends at 18 GiB, edu's 1 MiB BAR after it)" "true 19328401408" "$(json_get /tmp/b.flat .vm_budget.address_fits) $(json_get /tmp/b.flat .vm_budget.highest_address)"
check_eq "dma_entry_limit is dma_avail of a fresh container" 65535 "$(json_get /tmp/b.flat .vm_budget.dma_entry_limit)"
check_eq "no vIOMMU: a few mappings fit" true "$(json_get /tmp/b.flat .vm_budget.mappings_fit)"

vfioctl dma check $EDU --vm-memory 600G | tee /tmp/b.txt || fail "dma check --vm-memory 600G exited $?"
grep -q "against 39-bit IOVA: EXCEEDS" /tmp/b.txt && ok "600G exceeds the 39-bit IOVA space" || fail "600G not reported beyond 39 bits"

vfioctl dma check $EDU --vm-memory 1G --viommu --json | json_flat >/tmp/v.flat || fail "dma check --viommu exited $?"
check_eq "vIOMMU, 4 KiB pages: 262144 mappings exceed 65535" "262144 false" "$(json_get /tmp/v.flat .vm_budget.mappings_per_container) $(json_get /tmp/v.flat .vm_budget.mappings_fit)"
vfioctl dma check $EDU --vm-memory 1G --viommu --vm-page-size 2M --json | json_flat >/tmp/v2.flat || fail "dma check --vm-page-size 2M exited $?"
check_eq "vIOMMU, 2 MiB pages: 512 mappings fit" "512 true" "$(json_get /tmp/v2.flat .vm_budget.mappings_per_container) $(json_get /tmp/v2.flat .vm_budget.mappings_fit)"
check_eq "memlock for 4 devices with a vIOMMU: 4 x 1 GiB + 1 GiB" 5368709120 "$(vfioctl dma check $EDU --vm-memory 1G --viommu --vm-devices 4 --json | json_flat | awk -F= '$1 == ".vm_budget.memlock_needed" { print $2 }')"

# The doctor reads the same limits from sysfs: MGAW 39 from the unit's cap register.
vfioctl doctor --vm-memory 600G --json | json_flat >/tmp/d.flat
i=$(grep '^\.findings\[[0-9]*\]\.id=dma.budget$' /tmp/d.flat | sed 's/^\.findings\[\([0-9]*\)\].*/\1/')
check_eq "doctor: dma.budget is a warning" warning "$(json_get /tmp/d.flat ".findings[$i].status")"
grep -q "^\.findings\[$i\]\.evidence\[[0-9]*\]=.*translates 39-bit addresses" /tmp/d.flat && ok "doctor names the 39-bit width" || fail "doctor: no 39-bit evidence"
grep -q "^\.findings\[$i\]\.evidence\[[0-9]*\]=.*dma_entry_limit 65535" /tmp/d.flat && ok "doctor reads dma_entry_limit" || fail "doctor: no dma_entry_limit"
lab_finish
