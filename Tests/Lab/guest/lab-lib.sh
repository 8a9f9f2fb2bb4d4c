# Shared helpers for lab scenarios (busybox sh). Source it: . /lab/bin/lab-lib.sh
#
# A scenario fails when it exits non-zero; `fail` records a failure and carries on, so one run
# reports every mismatch; `lab_finish` exits with the verdict. Devices a scenario binds with
# `lab_bind` are given back to their old driver on exit, so scenarios do not depend on each other.

LAB_FAILURES=0
LAB_RESTORE=

fail() { echo "FAIL: $*"; LAB_FAILURES=$((LAB_FAILURES + 1)); }
ok() { echo "ok: $*"; }
# check DESCRIPTION EXPECTED ACTUAL
check_eq() {
    if [ "$2" = "$3" ]; then ok "$1 ($3)"; else fail "$1: expected '$2', got '$3'"; fi
}
lab_finish() {
    if [ "$LAB_FAILURES" -eq 0 ]; then echo "all checks passed"; exit 0; fi
    echo "$LAB_FAILURES check(s) failed"; exit 1
}

# The VFIO backend for this boot (lab.backend= on the kernel command line, from the host's
# VFIOCTL_LAB_BACKEND): added as --backend to every vfioctl command that opens a device and does
# not name a backend itself. Unset: vfioctl's own default (auto).
LAB_BACKEND=$(sed -n 's/.*lab\.backend=\([a-z0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$LAB_BACKEND" ]; then
    vfioctl() {
        case " $* " in *" --backend "*) command vfioctl "$@"; return ;; esac
        case "$1 $2" in
            "device info" | "bar info" | "dma check" | "dma bench" | "dma bench-bar" | "irq test") command vfioctl "$@" --backend "$LAB_BACKEND" ;;
            reset\ *) command vfioctl "$@" --backend "$LAB_BACKEND" ;;
            *) command vfioctl "$@" ;;
        esac
    }
    # The probe tool's device checks take the same --backend.
    vfioctl_lab_probe_backend() {
        case " $* " in *" --backend "*) command vfioctl-lab-probe "$@"; return ;; esac
        case "$1" in
            edu-test | p2p | vm-smoke | vm-dma-smoke | irq-test) command vfioctl-lab-probe "$@" --backend "$LAB_BACKEND" ;;
            *) command vfioctl-lab-probe "$@" ;;
        esac
    }
    alias vfioctl-lab-probe=vfioctl_lab_probe_backend
fi

sysfs_dev() { echo "/sys/bus/pci/devices/$1"; }
dev_driver() { # prints the bound driver's name, or nothing
    [ -e "$(sysfs_dev "$1")/driver" ] && basename "$(readlink "$(sysfs_dev "$1")/driver")"
}
dev_group() { basename "$(readlink "$(sysfs_dev "$1")/iommu_group")"; }
dev_id() { # vendor:device in lower-case hex, e.g. 1234:11e8
    echo "$(sed 's/^0x//' "$(sysfs_dev "$1")/vendor"):$(sed 's/^0x//' "$(sysfs_dev "$1")/device")"
}

# lab_bind ADDRESS DRIVER: bind the device to DRIVER (vfio-pci, say) the way an admin does by
# hand: unbind, driver_override, drivers_probe. The old driver is restored when the scenario ends.
lab_bind() {
    addr=$1 drv=$2 old=$(dev_driver "$1")
    [ "$old" = "$drv" ] && return 0
    LAB_RESTORE="$LAB_RESTORE $addr=${old:--}"
    if [ -n "$old" ]; then echo "$addr" >"$(sysfs_dev "$addr")/driver/unbind" || return 1; fi
    echo "$drv" >"$(sysfs_dev "$addr")/driver_override" || return 1
    echo "$addr" >/sys/bus/pci/drivers_probe || return 1
    [ "$(dev_driver "$addr")" = "$drv" ] || { echo "lab_bind: $addr did not bind to $drv (driver: $(dev_driver "$addr"))"; return 1; }
}
lab_restore() {
    for entry in $LAB_RESTORE; do
        addr=${entry%%=*} old=${entry#*=}
        [ -e "$(sysfs_dev "$addr")/driver" ] && echo "$addr" >"$(sysfs_dev "$addr")/driver/unbind"
        echo >"$(sysfs_dev "$addr")/driver_override"
        if [ "$old" != - ]; then echo "$addr" >/sys/bus/pci/drivers_probe; fi
    done 2>/dev/null
    LAB_RESTORE=
}
trap lab_restore EXIT

# wait_for PATH [SECONDS]: device nodes appear asynchronously.
wait_for() {
    n=0
    while [ ! -e "$1" ]; do
        n=$((n + 1)); [ "$n" -gt "$((${2:-5} * 10))" ] && return 1
        usleep 100000
    done
}

# json_flat: flattens pretty-printed JSON (one value per line, as JSONEncoder's .prettyPrinted
# writes it) to PATH=VALUE lines: [0].address=0000:00:01.0, [0].bars[1].size=4096,
# [6].devices[2]=0000:01:02.0. Strings lose their quotes (\" \\ \/ unescaped); null stays null;
# an empty array or object prints PATH=[] or PATH={}.
json_flat() {
    awk '
        function unq(s) {
            if (s ~ /^".*"$/) {
                s = substr(s, 2, length(s) - 2)
                gsub(/\\"/, "\"", s); gsub(/\\\//, "/", s); gsub(/\\\\/, "\\", s)
            }
            return s
        }
        BEGIN { depth = 0; type[0] = "top"; path[0] = "" }
        {
            line = $0
            sub(/^[ \t]+/, "", line); sub(/[ \t\r]+$/, "", line); sub(/,$/, "", line)
            if (line == "") next
            if (line == "}" || line == "]") { depth--; next }
            key = ""
            if (type[depth] == "obj") {
                if (match(line, /^"([^"\\]|\\.)*"[ \t]*:[ \t]*/)) {
                    k = substr(line, 1, RLENGTH); line = substr(line, RLENGTH + 1)
                    sub(/[ \t]*:[ \t]*$/, "", k)
                    p = path[depth] "." unq(k)
                } else { print "json_flat: cannot parse: " $0 > "/dev/stderr"; bad = 1; next }
            } else if (type[depth] == "arr") {
                p = path[depth] "[" idx[depth]++ "]"
            } else {
                p = ""
            }
            if (line == "{" || line == "[") {
                depth++; type[depth] = (line == "{") ? "obj" : "arr"; path[depth] = p; idx[depth] = 0
            } else if (line == "[]" || line == "{}" || line == "[ ]" || line == "{ }") {
                print p "=" (substr(line, 1, 1) == "[" ? "[]" : "{}")
            } else {
                print p "=" unq(line)
            }
        }
        END { exit bad }
    '
}

# json_get FLATFILE PATH: one value from json_flat output.
json_get() { awk -v p="$2" 'index($0, p "=") == 1 { print substr($0, length(p) + 2); exit }' "$1"; }

# --- Nested VMMs (scenarios with "# lab: host-root": vm-config-qemu, example-vmm-linux) ---------
# mount_nested: mounts the host's root over 9p at /host and sets NESTED to the nested guest's
# folder (vmlinuz, initramfs.cpio.gz; built by Tests/Lab/lab, lab.nested=DIR on the command line).
mount_nested() {
    NESTED=/host$(tr ' ' '\n' </proc/cmdline | sed -n 's/^lab\.nested=//p')
    mkdir -p /host
    grep -q ' /host 9p ' /proc/mounts || mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 hostroot /host ||
        { fail "mount the host's root over 9p (is the boot's virtio-9p device there?)"; return 1; }
    [ -r "$NESTED/vmlinuz" ] && [ -r "$NESTED/initramfs.cpio.gz" ] || { fail "no nested guest in $NESTED"; return 1; }
}
# host_qemu ARGS...: the host's QEMU through the host's loader and libraries (its /lib64 loader
# link is absolute and does not resolve under /host). -L: Debian keeps bios-256k.bin in
# /usr/share/seabios. It execs: run it in the background (its pid is then QEMU's).
host_qemu() {
    exec /host/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path /host/lib/x86_64-linux-gnu:/host/usr/lib/x86_64-linux-gnu \
        /host/usr/bin/qemu-system-x86_64 -L /host/usr/share/qemu -L /host/usr/share/seabios "$@"
}
# nvme_disk: the lab NVMe's namespace, found by its serial (its name depends on probe order: the
# SR-IOV NVMe's subsystem may take nvme0 first). wait_disk sets DISK to it, waiting up to 10 s.
nvme_disk() {
    for d in /sys/block/nvme*n1; do
        [ "$(tr -d ' ' <"$d/device/serial" 2>/dev/null)" = vfioctl-lab ] && [ -e "/dev/${d##*/}" ] && { echo "/dev/${d##*/}"; return 0; }
    done
    return 1
}
wait_disk() { n=0; until DISK=$(nvme_disk); do n=$((n + 1)); [ $n -gt 100 ] && return 1; usleep 100000; done; }
# write_token: a random token at byte 0 of the lab NVMe's namespace, byte 4096 cleared; sets TOKEN
# and EXPECTED (the answer the nested guest must write back).
write_token() {
    wait_disk || { fail "no namespace of the lab NVMe (serial vfioctl-lab)"; return 1; }
    TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    EXPECTED="answer $(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)"
    { printf 'token:%s' "$TOKEN"; dd if=/dev/zero bs=1 count=$((4096 - 6 - ${#TOKEN})) 2>/dev/null; } |
        dd of="$DISK" bs=4096 count=1 conv=fsync 2>/dev/null || fail "write the token"
    dd if=/dev/zero of="$DISK" bs=4096 seek=1 count=1 conv=fsync 2>/dev/null || fail "clear the answer block"
}
