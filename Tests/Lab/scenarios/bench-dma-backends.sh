# bench-dma-backends: figures for BENCHMARKS.md on the built kernel (VFIOCTL_LAB_KERNEL=7.3-iommufd),
# where type1 and iommufd run side by side. Each vfioctl figure is taken beside a C program making
# the same ioctls in the same boot (/lab/bin/dma-map-ref, /lab/bin/bar-dma-ref; --iommufd for the
# iommufd rows), medians:
# - DMA map and unmap of 1 GiB of RAM backed by 2 MiB hugetlb pages and by 4 KiB pages
#   (`vfioctl dma bench --backing 2m|4k`): VFIO_IOMMU_MAP_DMA against IOMMU_IOAS_MAP;
# - peer-to-peer map of a 1 GiB window of ivshmem's BAR2 (`vfioctl dma bench-bar`), at vfioctl's
#   placement and 4 KiB off it, pages not faulted first: type1 walks the BAR's PFNMAP mapping,
#   iommufd maps a dma-buf of it (export, IOMMU_IOAS_MAP_FILE, close).
# Also: IOMMU_IOAS_MAP of the BAR's mapping itself, measured by the C program.
# lab: timeout 420
# lab: manual (run by hand on VFIOCTL_LAB_KERNEL=7.3-iommufd for BENCHMARKS.md: it takes minutes)
# lab: extra-memory 1536
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0 IVSHMEM=0000:00:03.0 GIB=1073741824
[ -e /dev/iommu ] || { fail "no /dev/iommu: this scenario runs on VFIOCTL_LAB_KERNEL=7.3-iommufd"; lab_finish; }
lab_bind $EDU vfio-pci || fail "could not bind $EDU to vfio-pci"
lab_bind $IVSHMEM vfio-pci || fail "could not bind $IVSHMEM to vfio-pci"
ulimit -l unlimited
kernel=$(uname -r | cut -d+ -f1)
field() { echo "$2" | sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
# row WHAT BACKEND VFIOCTL_OUT C_OUT MAP_KEY UNMAP_KEY: one table line, and figures present.
row() {
    vm=$(field "$5" "$3") cm=$(field "$5" "$4") vu=$(field "$6" "$3") cu=$(field "$6" "$4")
    echo "table: $kernel | $1 | $2 | $vm | $cm | $(ratio "$vm" "$cm") | $vu | $cu | $(ratio "$vu" "$cu")"
    [ -n "$vm" ] && [ -n "$cm" ] && [ -n "$vu" ] && [ -n "$cu" ] && ok "figures for $1 $2" || fail "missing figures for $1 $2: $3 / $4"
    eval "map_$(echo "$1-$2" | tr -c 'A-Za-z0-9\n' _)=$vm"
}
echo "table: kernel | case | backend | vfioctl map ms | C map ms | ratio | vfioctl unmap ms | C unmap ms | ratio"

# RAM, 2 MiB pages first (reserved while memory is not yet fragmented), then 4 KiB pages.
echo 512 >/proc/sys/vm/nr_hugepages
check_eq "512 2 MiB pages reserved" 512 "$(cat /proc/sys/vm/nr_hugepages)"
for backing in 2m 4k; do
    repeat=7; [ $backing = 4k ] && repeat=3
    for backend in type1 iommufd; do
        v=$(vfioctl dma bench $EDU --size 1G --backing $backing --repeat $repeat --backend $backend) ||
            { fail "dma bench --backing $backing --backend $backend exited $?"; continue; }
        if [ $backend = type1 ]; then
            c=$(dma-map-ref --backing $backing "$(dev_group $EDU)" $GIB $repeat)
        else
            c=$(dma-map-ref --backing $backing --iommufd $EDU $GIB $repeat)
        fi || { fail "dma-map-ref --backing $backing ($backend) exited $?"; continue; }
        echo "bench: $v"; echo "bench: $c"
        want=hugetlb-2m; [ $backing = 4k ] && want=4k
        check_eq "vfioctl's buffer backing ($backing, $backend)" $want "$(echo "$v" | sed -n 's/.* backing=\([a-z0-9-]*\).*/\1/p')"
        check_eq "C's buffer backing ($backing, $backend)" $want "$(echo "$c" | sed -n 's/.* backing=\([a-z0-9-]*\).*/\1/p')"
        row "RAM 1 GiB $backing" $backend "$v" "$c" map_median_ms unmap_median_ms
    done
    [ $backing = 2m ] && echo 0 >/proc/sys/vm/nr_hugepages
done

# Peer-to-peer: 1 GiB of ivshmem's BAR2, placed and 4 KiB off.
for skew in 0 0x1000; do
    placement=placed; [ $skew != 0 ] && placement="+4KiB"
    for backend in type1 iommufd; do
        repeat=15; [ $backend = type1 ] && [ $skew != 0 ] && repeat=3
        v=$(vfioctl dma bench-bar $IVSHMEM --bar 2 --length $GIB --skew $skew --repeat $repeat --backend $backend) ||
            { fail "dma bench-bar skew $skew --backend $backend exited $?"; continue; }
        if [ $backend = type1 ]; then
            c=$(bar-dma-ref "$(dev_group $IVSHMEM)" $IVSHMEM 2 0 $GIB $skew 0 $repeat)
        else
            c=$(bar-dma-ref --iommufd - $IVSHMEM 2 0 $GIB $skew 0 $repeat)
        fi || { fail "bar-dma-ref skew $skew ($backend) exited $?"; continue; }
        echo "bench: $v"; echo "bench: $c"
        row "BAR 1 GiB $placement" $backend "$v" "$c" map_ms unmap_ms
    done
done

# IOMMU_IOAS_MAP of the BAR's own mapping (a PFNMAP VMA): what the kernel answers.
c=$(bar-dma-ref --iommufd --map-va - $IVSHMEM 2 0 $GIB 0 1 1) || fail "bar-dma-ref --map-va exited $?"
echo "measured: $kernel IOMMU_IOAS_MAP of a 1 GiB BAR mapping (pages faulted first): $c"
check_eq "IOMMU_IOAS_MAP of a PFNMAP mapping fails with EFAULT" "c-reference ioas-map-va errno=14 (Bad address)" "$c"

echo "bench: $kernel BAR 1 GiB placed: type1 ${map_BAR_1_GiB_placed_type1:-?} ms, iommufd ${map_BAR_1_GiB_placed_iommufd:-?} ms; +4 KiB: type1 ${map_BAR_1_GiB__4KiB_type1:-?} ms, iommufd ${map_BAR_1_GiB__4KiB_iommufd:-?} ms"
lab_finish
