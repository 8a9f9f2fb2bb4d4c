# vm-dma: edu DMA into a tiny KVM guest's RAM through IOVA = guest-physical address.
# `vfioctl-lab-probe vm-dma-smoke` (one PassthroughVM, as a VMM builds it) maps the guest's RAM
# for DMA at IOVA = gpa through the VM's container, enables bus mastering,
# and has edu copy a pattern from guest RAM into its buffer and back out to another gpa; the
# guest reads zeros there before and the pattern after. The command register is restored.
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0
IVSHMEM=0000:00:03.0
trap 'vfioctl unbind $EDU >/dev/null 2>&1; vfioctl unbind $IVSHMEM >/dev/null 2>&1; lab_restore' EXIT

command_register() { dd if="$(sysfs_dev "$1")/config" bs=1 skip=4 count=2 2>/dev/null | od -An -tx2 | tr -d ' '; }

vfioctl bind $EDU >/dev/null || fail "vfioctl bind $EDU exited $?"
before=$(command_register $EDU)
vfioctl-lab-probe vm-dma-smoke $EDU || fail "vm-dma-smoke (text) exited $?"
vfioctl-lab-probe vm-dma-smoke $EDU --bytes 4092 --json >/tmp/dma.json 2>/tmp/dma.err || fail "vm-dma-smoke --json exited $?: $(cat /tmp/dma.err)"
json_flat </tmp/dma.json >/tmp/dma.flat
check_eq "edu identification through BAR0" 0x010000ed "$(json_get /tmp/dma.flat .identification)"
check_eq "RAM DMA-mapped at IOVA = gpa" 0x0 "$(json_get /tmp/dma.flat .iova)"
check_eq "guest saw zeros before the DMA" true "$(json_get /tmp/dma.flat .before_all_zero)"
check_eq "first transfer" ram-to-device "$(json_get /tmp/dma.flat '.transfers[0].direction')"
check_eq "second transfer" device-to-ram "$(json_get /tmp/dma.flat '.transfers[1].direction')"
check_eq "second transfer's IOVA (= gpa)" 0x100000 "$(json_get /tmp/dma.flat '.transfers[1].iova')"
check_eq "guest's first word after DMA" 0xa5c30f00 "$(json_get /tmp/dma.flat '.guest_first_words[0]')"
check_eq "guest's second word after DMA" 0xa4c20e01 "$(json_get /tmp/dma.flat '.guest_first_words[1]')"
check_eq "guest words matching the pattern" 1023 "$(json_get /tmp/dma.flat .guest_words_matching)"
check_eq "host view of guest RAM" true "$(json_get /tmp/dma.flat .host_view_matches)"
check_eq "dma-smoke ok" true "$(json_get /tmp/dma.flat .ok)"
echo "transfer times (ms): $(json_get /tmp/dma.flat '.transfers[0].milliseconds') $(json_get /tmp/dma.flat '.transfers[1].milliseconds')"
check_eq "edu command register restored" "$before" "$(command_register $EDU)"

# A transfer filling edu's whole 4 KiB buffer would abort QEMU ("hardware error"): refused first.
out=$(vfioctl-lab-probe vm-dma-smoke $EDU --bytes 4096 2>&1) && fail "--bytes 4096 accepted: $out" \
    || { echo "$out" | grep -q "4092" && ok "--bytes 4096 refused: $out" || fail "--bytes 4096: unhelpful error: $out"; }

# Not an edu: refused before anything is programmed.
vfioctl bind $IVSHMEM >/dev/null || fail "vfioctl bind $IVSHMEM exited $?"
out=$(vfioctl-lab-probe vm-dma-smoke $IVSHMEM 2>&1) && fail "dma-smoke on ivshmem succeeded: $out" \
    || { echo "$out" | grep -q "1234:11e8" && ok "non-edu device refused: $out" || fail "non-edu device: unhelpful error: $out"; }

vfioctl unbind $EDU >/dev/null || fail "vfioctl unbind $EDU exited $?"
vfioctl unbind $IVSHMEM >/dev/null || fail "vfioctl unbind $IVSHMEM exited $?"
lab_finish
