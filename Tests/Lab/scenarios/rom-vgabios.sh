# rom-vgabios: the std VGA's option ROM (SeaBIOS's vgabios) read through sysfs (enabled, read,
# disabled again) and through VFIO's ROM region once the device is on vfio-pci; both parse to the
# same valid legacy image for 1234:1111. A device without a ROM is a clear error, nothing changed.
. /lab/bin/lab-lib.sh

VGA=0000:00:01.0 E1000E=0000:00:04.0
rom_line() { lspci -vv -s "$1" 2>/dev/null | grep 'Expansion ROM'; }
before=$(rom_line $VGA)
[ -n "$before" ] || fail "lspci shows no expansion ROM on $VGA"

vfioctl rom check $VGA || fail "rom check $VGA exited $?"
vfioctl rom check $VGA --json | json_flat >/tmp/rom.flat || fail "rom check --json exited $?"
check_eq "one image, legacy x86" "legacy-x86" "$(json_get /tmp/rom.flat '.images[0].code_type')"
check_eq "image names the std VGA" "1234 1111" "$(json_get /tmp/rom.flat '.images[0].vendor_id') $(json_get /tmp/rom.flat '.images[0].device_id')"
check_eq "checksum valid, last image" "true true" "$(json_get /tmp/rom.flat '.images[0].checksum_valid') $(json_get /tmp/rom.flat '.images[0].last')"
check_eq "serves a VM (legacy image 0)" "true 0" "$(json_get /tmp/rom.flat .serves_vm) $(json_get /tmp/rom.flat .legacy_image)"
check_eq "read through sysfs" "sysfs rom" "$(json_get /tmp/rom.flat .source)"
check_eq "ROM disabled again (lspci line unchanged)" "$before" "$(rom_line $VGA)"
# The kernel refuses reads of a disabled rom attribute: vfioctl left it disabled.
if dd if=$(sysfs_dev $VGA)/rom of=/dev/null bs=512 count=1 2>/dev/null; then
    fail "rom attribute still readable: left enabled"
else
    ok "rom attribute disabled after the read"
fi
vfioctl rom dump $VGA --output /tmp/sysfs.rom || fail "rom dump exited $?"
size=$(wc -c </tmp/sysfs.rom)
[ "$size" -ge 512 ] && ok "dumped $size bytes" || fail "dump has $size bytes"

# No ROM (the lab's e1000e has romfile=): exit 1, one line, nothing changed.
out=$(vfioctl rom check $E1000E 2>&1); status=$?
check_eq "no ROM: exit 1" 1 "$status"
case "$out" in *"has no option ROM"*) ok "no ROM: $out" ;; *) fail "no ROM message: $out" ;; esac

# On vfio-pci the ROM comes through VFIO's ROM region, and parses the same.
lab_bind $VGA vfio-pci || fail "could not bind $VGA to vfio-pci"
vfioctl rom check $VGA --json | json_flat >/tmp/vrom.flat || fail "rom check via VFIO exited $?"
vfioctl rom check $VGA
check_eq "read through VFIO" "VFIO ROM region" "$(json_get /tmp/vrom.flat .source)"
for key in '.images[0].code_type' '.images[0].vendor_id' '.images[0].device_id' '.images[0].length' '.images[0].checksum_valid' .serves_vm; do
    check_eq "VFIO and sysfs agree on $key" "$(json_get /tmp/rom.flat "$key")" "$(json_get /tmp/vrom.flat "$key")"
done
vfioctl rom dump $VGA --output /tmp/vfio.rom || fail "rom dump via VFIO exited $?"
cmp -n "$size" /tmp/sysfs.rom /tmp/vfio.rom && ok "the first $size bytes are identical" || fail "sysfs and VFIO ROM bytes differ"
lab_finish
