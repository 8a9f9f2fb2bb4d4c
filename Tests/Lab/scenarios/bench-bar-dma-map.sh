# bench-bar-dma-map: peer-to-peer DMA-map time of a BAR mapping, for BENCHMARKS.md. type1
# translates a PFN-mapped VA by walking its page tables; from 6.15 one mapping level at a time,
# so a BAR mapped with 1 GiB pages maps in a few steps. For a 1 GiB window of ivshmem's BAR2 at
# vfioctl's placement and 4 KiB off it, with the page tables made first (--touch) and not,
# `vfioctl dma bench-bar` against a C program making the same ioctls (/lab/bin/bar-dma-ref) in
# the same boot: medians of 3 fresh mappings each (4 KiB pages on 6.12 take over a second each).
# lab: timeout 300
. /lab/bin/lab-lib.sh

IVSHMEM=0000:00:03.0 LENGTH=0x40000000 REPEAT=3
lab_bind $IVSHMEM vfio-pci || fail "could not bind $IVSHMEM to vfio-pci"
group=$(dev_group $IVSHMEM)
kernel=$(uname -r | cut -d+ -f1)
echo "table: kernel placement touched | vfioctl map ms | C map ms | ratio | vfioctl unmap ms | C unmap ms"
for skew in 0 0x1000; do
    for touch in 1 0; do
        flag=; [ $touch = 1 ] && flag=--touch
        v=$(vfioctl dma bench-bar $IVSHMEM --bar 2 --length $LENGTH --skew $skew $flag --repeat $REPEAT) ||
            { fail "dma bench-bar skew $skew touch $touch exited $?"; continue; }
        c=$(bar-dma-ref "$group" $IVSHMEM 2 0 $LENGTH $skew $touch $REPEAT) ||
            { fail "bar-dma-ref skew $skew touch $touch exited $?"; continue; }
        vm=$(echo "$v" | sed -n 's/.* map_ms=\([0-9.]*\) .*/\1/p'); cm=$(echo "$c" | sed -n 's/.* map_ms=\([0-9.]*\) .*/\1/p')
        vu=$(echo "$v" | sed -n 's/.*unmap_ms=\([0-9.]*\) .*/\1/p'); cu=$(echo "$c" | sed -n 's/.*unmap_ms=\([0-9.]*\) .*/\1/p')
        ratio=$(awk -v a="$vm" -v b="$cm" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
        placement=placed; [ $skew != 0 ] && placement="+4KiB"
        echo "table: $kernel $placement $([ $touch = 1 ] && echo yes || echo no) | $vm | $cm | $ratio | $vu | $cu"
        eval "map_${placement#+}_$touch=$vm"
        [ -n "$vm" ] && [ -n "$cm" ] && ok "figures for skew $skew touch $touch" || fail "missing figures: $v / $c"
        # A guard, not a benchmark: the library adds no cost of its own beyond noise.
        awk -v a="$vm" -v b="$cm" 'BEGIN { exit !(a <= 2 * b + 5) }' && ok "vfioctl within 2x (+5 ms) of C ($vm vs $cm ms)" ||
            fail "vfioctl map $vm ms vs C $cm ms"
    done
done
speedup=$(awk -v a="${map_4KiB_1:-0}" -v b="${map_placed_1:-0}" 'BEGIN { if (b > 0) printf "%.0f", a / b; else print "-" }')
echo "bench: $kernel DMA-map of 1 GiB of BAR, pages touched first: placed ${map_placed_1:-?} ms, 4 KiB off ${map_4KiB_1:-?} ms (${speedup}x)"
lab_finish
