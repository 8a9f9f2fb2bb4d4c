# iommufd-backend: the second VFIO backend. Where the kernel has IOMMUFD and VFIO device files
# (VFIOCTL_LAB_KERNEL=7.3-iommufd): edu bound to vfio-pci has a sysfs vfio-dev/vfioN entry and a
# /dev/vfio/devices/vfioN node; `device info --backend iommufd` binds it through that file (BIND,
# ATTACH to an IOAS) and reads its regions and IRQs; auto picks iommufd; edu DMA round-trips RAM
# through the IOAS and its MSI arrives on the eventfd; edu reads ivshmem's BAR2 through a dma-buf
# mapped with IOMMU_IOAS_MAP_FILE, while IOMMU_IOAS_MAP of the BAR's own mapping fails with EFAULT
# and an error naming the case (type1 maps it); `dma check` reports no dma_avail; `cdi` names
# only nodes that exist, for both backends; a device whose group is held
# open through the legacy path is refused as busy. Where the kernel lacks IOMMUFD (6.12, 7.3):
# `--backend iommufd` exits 1 naming CONFIG_IOMMUFD, and auto picks type1.
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0 IVSHMEM=0000:00:03.0
lab_bind $EDU vfio-pci || fail "could not bind $EDU to vfio-pci"

if [ ! -e /dev/iommu ]; then
    vfioctl device info $EDU --backend iommufd >/tmp/info.out 2>&1
    check_eq "--backend iommufd on a kernel without IOMMUFD exits 1" 1 "$?"
    cat /tmp/info.out
    grep -q "CONFIG_IOMMUFD" /tmp/info.out && ok "the error names CONFIG_IOMMUFD" || fail "no CONFIG_IOMMUFD in: $(cat /tmp/info.out)"
    vfioctl device info $EDU --backend auto --json | json_flat >/tmp/info.flat || fail "device info exited $?"
    check_eq "auto picks type1" type1 "$(json_get /tmp/info.flat .backend)"
    lab_finish
fi

name=$(ls /sys/bus/pci/devices/$EDU/vfio-dev 2>/dev/null)
echo "$name" | grep -Eq '^vfio[0-9]+$' && ok "sysfs vfio-dev names the device file ($name)" || fail "no vfio-dev entry: '$name'"
[ -c /dev/vfio/devices/$name ] && ok "/dev/vfio/devices/$name is a character device" || fail "no /dev/vfio/devices/$name"

vfioctl device info $EDU --backend iommufd --json >/tmp/info.json || fail "device info --backend iommufd exited $?"
cat /tmp/info.json
json_flat </tmp/info.json >/tmp/info.flat
check_eq "opened through iommufd" iommufd "$(json_get /tmp/info.flat .backend)"
check_eq "IOMMU group from sysfs" "$(dev_group $EDU)" "$(json_get /tmp/info.flat .group)"
check_eq "BAR0 region: 1 MiB" 1048576 "$(json_get /tmp/info.flat '.regions[0].size')"
check_eq "MSI IRQ index has one vector" 1 "$(json_get /tmp/info.flat '.irqs[1].count')"
vfioctl device info $EDU --backend auto --json | json_flat >/tmp/auto.flat || fail "device info (auto) exited $?"
check_eq "auto picks iommufd where /dev/iommu and the device file exist" iommufd "$(json_get /tmp/auto.flat .backend)"
vfioctl device info $EDU --backend type1 --json | json_flat >/tmp/type1.flat || fail "device info --backend type1 exited $?"
check_eq "type1 still works beside it" type1 "$(json_get /tmp/type1.flat .backend)"

vfioctl dma check $EDU --backend iommufd --json >/tmp/check.json || fail "dma check --backend iommufd exited $?"
cat /tmp/check.json
json_flat </tmp/check.json >/tmp/check.flat
check_eq "dma check through iommufd" iommufd "$(json_get /tmp/check.flat .backend)"
check_eq "no dma_avail on iommufd" null "$(json_get /tmp/check.flat .dma_avail)"
check_eq "nothing left mapped" 0 "$(json_get /tmp/check.flat .left_mapped)"

vfioctl-lab-probe edu-test $EDU --backend iommufd --json >/tmp/edu.json || fail "edu-test --backend iommufd exited $?"
cat /tmp/edu.json
json_flat </tmp/edu.json >/tmp/edu.flat
check_eq "RAM -> edu -> RAM through the IOAS" true "$(json_get /tmp/edu.flat .round_trip_matches)"
check_eq "edu's MSI arrived on the eventfd once" 1 "$(json_get /tmp/edu.flat .msi_signals)"
check_eq "nothing left mapped after edu-test" 0 "$(json_get /tmp/edu.flat .left_mapped)"

lab_bind $IVSHMEM vfio-pci || fail "could not bind $IVSHMEM to vfio-pci"
vfioctl-lab-probe p2p $EDU --peer $IVSHMEM --bar 2 --offset 0x1000 --backend iommufd --json >/tmp/p2p.json || fail "p2p --backend iommufd exited $?"
cat /tmp/p2p.json
json_flat </tmp/p2p.json >/tmp/p2p.flat
check_eq "edu read ivshmem's BAR through a dma-buf mapping" true "$(json_get /tmp/p2p.flat .matches)"
check_eq "the whole 2 GiB BAR is mapped" 2147483648 "$(json_get /tmp/p2p.flat .peer_mapping_size)"

# The BAR's own mapping (a PFNMAP VMA) with IOMMU_IOAS_MAP, as a type1 VMM maps it: the kernel
# answers EFAULT; the error names the case and the dma-buf path, and nothing is left mapped.
vfioctl-lab-probe p2p $EDU --peer $IVSHMEM --bar 2 --backend iommufd --map-bar-mapping >/tmp/pfn.out 2>&1
check_eq "IOMMU_IOAS_MAP of the BAR's PFNMAP mapping exits 1" 1 "$?"
cat /tmp/pfn.out
for needed in EFAULT PFNMAP dma-buf IOMMU_IOAS_MAP_FILE 6.19 "--backend type1" "mappings left in the DMA space: 0"; do
    grep -q -- "$needed" /tmp/pfn.out && ok "the PFNMAP error says '$needed'" || fail "the PFNMAP error lacks '$needed'"
done
vfioctl-lab-probe p2p $EDU --peer $IVSHMEM --bar 2 --backend type1 --map-bar-mapping --json | json_flat >/tmp/pfn1.flat ||
    fail "p2p --backend type1 --map-bar-mapping exited $?"
check_eq "type1 maps the same PFNMAP mapping, and edu reads through it" true "$(json_get /tmp/pfn1.flat .matches)"

# cdi: each backend's spec names only nodes this kernel made (character devices), iommufd's the
# device files and /dev/iommu, type1's the group and /dev/vfio/vfio.
for backend in type1 iommufd; do
    vfioctl cdi --backend $backend >/tmp/cdi-$backend.json 2>/tmp/cdi.err || fail "cdi --backend $backend exited $?: $(cat /tmp/cdi.err)"
    paths=$(sed -n 's/.*"path" *: *"\([^"]*\)".*/\1/p' /tmp/cdi-$backend.json)
    [ -n "$paths" ] || fail "cdi --backend $backend named no nodes"
    for path in $paths; do
        [ -c "$path" ] && ok "cdi $backend: $path is a character device" || fail "cdi $backend names $path, which is no character device"
    done
done
grep -q "\"/dev/vfio/devices/$name\"" /tmp/cdi-iommufd.json && grep -q '"/dev/iommu"' /tmp/cdi-iommufd.json &&
    ok "cdi iommufd names edu's device file and /dev/iommu" || fail "cdi iommufd: $(cat /tmp/cdi-iommufd.json)"
grep -q "\"/dev/vfio/$(dev_group $EDU)\"" /tmp/cdi-type1.json && grep -q '"/dev/vfio/vfio"' /tmp/cdi-type1.json &&
    ok "cdi type1 names edu's group and /dev/vfio/vfio" || fail "cdi type1: $(cat /tmp/cdi-type1.json)"

# A group held open through the legacy path: the device file refuses (EBUSY), nothing is left open.
vfio-hold "$(dev_group $EDU)" $EDU >/tmp/hold.out 2>&1 &
holder=$!
n=0; while ! grep -q ready /tmp/hold.out && [ $n -lt 50 ]; do usleep 100000; n=$((n + 1)); done
grep -q ready /tmp/hold.out || fail "vfio-hold: $(cat /tmp/hold.out)"
vfioctl device info $EDU --backend iommufd >/tmp/busy.out 2>&1
check_eq "--backend iommufd while the group is held exits 1" 1 "$?"
grep -q "busy" /tmp/busy.out && ok "the error says busy: $(cat /tmp/busy.out)" || fail "not a busy error: $(cat /tmp/busy.out)"
kill $holder; wait $holder 2>/dev/null
vfioctl device info $EDU --backend iommufd >/dev/null 2>&1 && ok "usable again once the holder is gone" || fail "still refused after the holder left"
lab_finish
