# dma-p2p: peer-to-peer DMA. ivshmem's 2 GiB BAR2, mapped through VFIO at vfioctl's placement
# (a VM_PFNMAP VMA), is DMA-mapped into the same container as edu (two IOMMU groups, one
# container); edu's DMA engine reads, from that IOVA, the bytes written through the BAR mmap.
# The bus address vfioctl translates for the mapping matches the BAR's start in sysfs.
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0 IVSHMEM=0000:00:03.0
lab_bind $EDU vfio-pci || fail "could not bind $EDU to vfio-pci"
lab_bind $IVSHMEM vfio-pci || fail "could not bind $IVSHMEM to vfio-pci"

vfioctl-lab-probe p2p $EDU --peer $IVSHMEM --bar 2 --offset 0x1000 --json >/tmp/p2p.json || fail "vfioctl-lab-probe p2p exited $?"
cat /tmp/p2p.json
json_flat </tmp/p2p.json >/tmp/p2p.flat
start=$(printf '%d' "$(sed -n 3p /sys/bus/pci/devices/$IVSHMEM/resource | cut -d' ' -f1)")
check_eq "edu read the bytes written through the BAR mmap" true "$(json_get /tmp/p2p.flat .matches)"
check_eq "BAR start from sysfs" "$start" "$(json_get /tmp/p2p.flat .bar_start)"
check_eq "translated bus address of the mapping's first byte" "$start" "$(json_get /tmp/p2p.flat .bar_start_translated)"
check_eq "translated bus address at +0x1000" $((start + 4096)) "$(json_get /tmp/p2p.flat .translated_physical)"
check_eq "the whole 2 GiB BAR is DMA-mapped" 2147483648 "$(json_get /tmp/p2p.flat .peer_mapping_size)"
check_eq "peer IOVA (2 MiB aligned, within edu's 28-bit reach)" 2097152 "$(json_get /tmp/p2p.flat .peer_iova)"
check_eq "mapping placed congruent to the bus address mod 1 GiB" $((start % 1073741824)) \
    "$(( $(json_get /tmp/p2p.flat .mapped_virtual) % 1073741824 ))"
check_eq "nothing left mapped" 0 "$(json_get /tmp/p2p.flat .left_mapped)"
lab_finish
