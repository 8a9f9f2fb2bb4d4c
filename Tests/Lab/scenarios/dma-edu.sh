# dma-edu: DMA through the emulated IOMMU with vfioctl's VFIO library, on QEMU's edu device.
# `dma check` reports the container (IOMMU page sizes 4K/2M/1G, IOVA ranges, dma_avail, the
# memlock limit; with the iommufd backend the IOAS: its 4 KiB alignment and no dma_avail) and maps and unmaps a test buffer; `vfioctl-lab-probe edu-test` round-trips bytes
# RAM -> device -> RAM through a mapped IOVA and takes edu's MSI on an eventfd; config space read
# through VFIO matches sysfs `config`; `bar toggle` shows a mapping refusing access while
# memory decoding is off, and unmap/remap.
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0
lab_bind $EDU vfio-pci || fail "could not bind $EDU to vfio-pci"

vfioctl dma check $EDU --json >/tmp/check.json || fail "dma check exited $?"
cat /tmp/check.json
json_flat </tmp/check.json >/tmp/check.flat
backend=$(json_get /tmp/check.flat .backend)
check_eq "dma check used the boot's backend" "${LAB_BACKEND:-$backend}" "$backend"
if [ "$backend" = iommufd ]; then
    # iommufd reports the alignment a mapping needs (4 KiB here), not the IOMMU's page sizes,
    # and has no entry limit (no dma_avail).
    check_eq "IOAS alignment (4 KiB)" 4096 "$(json_get /tmp/check.flat .iova_pgsizes)"
    check_eq "no dma_avail on iommufd (before, while mapped, after)" "null null null" \
        "$(json_get /tmp/check.flat .dma_avail) $(json_get /tmp/check.flat .dma_avail_while_mapped) $(json_get /tmp/check.flat .dma_avail_after)"
else
    check_eq "IOMMU page sizes (4K, 2M, 1G)" 1075843072 "$(json_get /tmp/check.flat .iova_pgsizes)"
    avail=$(json_get /tmp/check.flat .dma_avail)
    [ -n "$avail" ] && [ "$avail" != null ] && ok "dma_avail reported ($avail)" || fail "no dma_avail"
    check_eq "dma_avail while the test buffer is mapped" $((avail - 1)) "$(json_get /tmp/check.flat .dma_avail_while_mapped)"
    check_eq "dma_avail after unmapping" "$avail" "$(json_get /tmp/check.flat .dma_avail_after)"
fi
check_eq "IOVA ranges start at 0" 0 "$(json_get /tmp/check.flat '.iova_ranges[0].start')"
check_eq "test buffer at the first 2 MiB-aligned IOVA" 2097152 "$(json_get /tmp/check.flat '.test_mappings[0].iova')"
check_eq "nothing left mapped" 0 "$(json_get /tmp/check.flat .left_mapped)"

vfioctl-lab-probe edu-test $EDU --json >/tmp/edu.json || fail "vfioctl-lab-probe edu-test exited $?"
cat /tmp/edu.json
json_flat </tmp/edu.json >/tmp/edu.flat
check_eq "edu identification through the placed BAR0 mapping" 0x010000ed "$(json_get /tmp/edu.flat .identification)"
check_eq "RAM -> edu -> RAM round trip" true "$(json_get /tmp/edu.flat .round_trip_matches)"
check_eq "edu's MSI arrived on the eventfd once" 1 "$(json_get /tmp/edu.flat .msi_signals)"
check_eq "no MSI before one was requested" 0 "$(json_get /tmp/edu.flat .signals_before_irq_request)"
check_eq "edu's interrupt status says DMA" 0x100 "$(json_get /tmp/edu.flat .interrupt_status)"
check_eq "nothing left mapped after edu-test" 0 "$(json_get /tmp/edu.flat .left_mapped)"

# Config space through VFIO's config region against sysfs: IDs, revision/class, BAR0, subsystem.
vfioctl bar config $EDU --count 64 | tr -s ' \n' ' ' >/tmp/cfg.vfio || fail "bar config exited $?"
od -An -tx1 -v -N64 /sys/bus/pci/devices/$EDU/config | tr -s ' \n' ' ' >/tmp/cfg.sysfs
bytes() { awk -v from="$2" -v to="$3" '{ s = ""; for (i = from + 1; i <= to + 1; i++) s = s $i; print s }' "$1"; }
for range in "0 3 vendor/device" "8 11 revision/class" "16 19 BAR0" "44 47 subsystem"; do
    set -- $range
    check_eq "config $3 (bytes $1-$2) via VFIO = sysfs" "$(bytes /tmp/cfg.sysfs "$1" "$2")" "$(bytes /tmp/cfg.vfio "$1" "$2")"
done

vfioctl bar toggle $EDU --bar 0 >/tmp/toggle.out 2>&1 || fail "bar toggle exited $?: $(cat /tmp/toggle.out)"
cat /tmp/toggle.out
check_eq "read before toggling" "mapped: 0x010000ed" "$(sed -n 1p /tmp/toggle.out)"
grep -q "^decoding off: refused: memory decoding is off" /tmp/toggle.out && ok "access refused while decoding is off" || fail "decoding off: $(sed -n 2p /tmp/toggle.out)"
check_eq "read after decoding is back on" "decoding on: 0x010000ed" "$(sed -n 3p /tmp/toggle.out)"
check_eq "read after unmap and remap" "remapped: 0x010000ed" "$(sed -n 4p /tmp/toggle.out)"
# The same in JSON: the refusal's reason, and config bytes as one hex string equal to sysfs.
vfioctl bar toggle $EDU --bar 0 --json | json_flat >/tmp/toggle.flat || fail "bar toggle --json exited $?"
check_eq "toggle --json: decoding-off refused, no value" "decoding-off null" "$(json_get /tmp/toggle.flat '.steps[1].step') $(json_get /tmp/toggle.flat '.steps[1].value')"
json_get /tmp/toggle.flat '.steps[1].refused' | grep -q "memory decoding is off" && ok "toggle --json: the reason" || fail "toggle --json: no reason"
vfioctl bar config $EDU --count 64 --json | json_flat | sed -n 's/^\.hex=//p' >/tmp/cfg.hex
sysfs_hex=$(od -An -tx1 -v -N64 /sys/bus/pci/devices/$EDU/config | tr -d ' \n')
check_eq "bar config --json: 128 hex digits" 128 "$(tr -d '\n' </tmp/cfg.hex | wc -c)"
check_eq "bar config --json: IDs and class = sysfs" "$(echo "$sysfs_hex" | cut -c1-8) $(echo "$sysfs_hex" | cut -c17-24)" \
    "$(cut -c1-8 /tmp/cfg.hex) $(cut -c17-24 /tmp/cfg.hex)"
lab_finish
