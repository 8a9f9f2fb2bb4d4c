# bench-bar-dma: figures for BENCHMARKS.md, measured in the guest (TCG). `bar touch` of
# ivshmem's 2 GiB BAR2 (one byte per 4 KiB page, linear) at vfioctl's placement against the
# same BAR 4 KiB off it; and VFIO_IOMMU_MAP_DMA/UNMAP_DMA time per GiB for vfioctl (`dma bench`)
# against a C program making the same ioctls (/lab/bin/dma-map-ref), in the same boot.
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0 IVSHMEM=0000:00:03.0
lab_bind $IVSHMEM vfio-pci || fail "could not bind $IVSHMEM to vfio-pci"
lab_bind $EDU vfio-pci || fail "could not bind $EDU to vfio-pci"

touch_ms() { vfioctl bar touch $IVSHMEM --bar 2 --skew "$1" --json | json_flat | awk -F= '$1 == ".milliseconds" { print $2 }'; }
placed=$(touch_ms 0); placed2=$(touch_ms 0)
skewed=$(touch_ms 4K)
best=$(awk -v a="$placed" -v b="$placed2" 'BEGIN { print (a < b) ? a : b }')
ratio=$(awk -v a="$skewed" -v b="$best" 'BEGIN { printf "%.1f", a / b }')
echo "bench: bar touch 2 GiB linear: vfioctl placement ${best} ms, 4 KiB skew ${skewed} ms, ratio ${ratio}x"
awk -v r="$ratio" 'BEGIN { exit !(r > 5) }' && ok "placement at least 5x faster than a 4 KiB skew (${ratio}x)" || fail "placement speedup only ${ratio}x"

ulimit -l unlimited
group=$(dev_group $EDU)
swift=$(vfioctl dma bench $EDU --size 256M --repeat 3) || fail "dma bench exited $?"
reference=$(dma-map-ref "$group" 268435456 3) || fail "dma-map-ref exited $?"
echo "bench: $swift"
echo "bench: $reference"
s=$(echo "$swift" | sed -n 's/.*map_ms_per_gib=\([0-9.]*\).*/\1/p')
c=$(echo "$reference" | sed -n 's/.*map_ms_per_gib=\([0-9.]*\).*/\1/p')
[ -n "$s" ] && [ -n "$c" ] && ok "map per GiB: vfioctl $s ms, C $c ms" || fail "missing figures"
awk -v s="$s" -v c="$c" 'BEGIN { exit !(s < 2 * c + 5) }' && ok "vfioctl within 2x of the C reference" || fail "vfioctl map $s ms/GiB vs C $c ms/GiB"
lab_finish
