# list-vs-lspci: `vfioctl list --json` agrees with the guest's own lspci, device by device:
# the set of addresses, vendor and device IDs, the 6-digit class (lspci -nn's 4 digits plus the
# prog-if from lspci -mm), the bound driver, and each memory/I-O BAR's start and size.
. /lab/bin/lab-lib.sh

vfioctl list --json >/tmp/list.json 2>/tmp/list.err || fail "vfioctl list --json exited $?: $(cat /tmp/list.err)"
json_flat </tmp/list.json >/tmp/list.flat || fail "list --json output is not the expected JSON"
# (-k looks up module aliases with libkmod, which has no data in the lab: hide that one warning.)
lspci -D -nn -k >/tmp/lspci.txt 2>/tmp/lspci.err || fail "lspci -D -nn -k failed: $(cat /tmp/lspci.err)"
grep -v 'Unable to load libkmod resources' /tmp/lspci.err >&2
lspci -D -n -mm >/tmp/lspci.mm || fail "lspci -D -n -mm failed"
lspci -D -vv >/tmp/lspci.vv 2>/dev/null || fail "lspci -D -vv failed"

# One line per device from lspci: "address vendor device class driver" (driver "-" if none).
awk '
    function flush() { if (addr != "") print addr, ven, dev, cls, (drv == "" ? "-" : drv) }
    /^[0-9a-f]{4}:/ {
        flush(); addr = $1; drv = ""; cls = ""; ven = ""; dev = ""
        # class: the first [xxxx]; IDs: the last [vvvv:dddd] on the line
        if (match($0, /\[[0-9a-f]{4}\]/)) cls = substr($0, RSTART + 1, 4)
        line = $0
        while (match(line, /\[[0-9a-f]{4}:[0-9a-f]{4}\]/)) { id = substr(line, RSTART + 1, 9); line = substr(line, RSTART + RLENGTH) }
        ven = substr(id, 1, 4); dev = substr(id, 6, 4)
        next
    }
    /^\tKernel driver in use: / { drv = $0; sub(/^\tKernel driver in use: /, "", drv) }
    END { flush() }
' /tmp/lspci.txt >/tmp/lspci.devs
# prog-if from -mm output ("-pXX" when not zero).
awk '{ p = "00"; for (i = 2; i <= NF; i++) if ($i ~ /^-p[0-9a-f][0-9a-f]$/) p = substr($i, 3); print $1, p }' /tmp/lspci.mm >/tmp/lspci.progif

# The same from vfioctl.
awk -F= '
    /^\[[0-9]+\]\.(address|vendor_id|device_id|class|driver)=/ {
        split($1, a, /[][]/); i = a[2]; k = $1; sub(/^\[[0-9]+\]\./, "", k); v[i, k] = $2; if (i + 1 > n) n = i + 1
    }
    END { for (i = 0; i < n; i++) print v[i, "address"], v[i, "vendor_id"], v[i, "device_id"], v[i, "class"], (v[i, "driver"] == "null" ? "-" : v[i, "driver"]) }
' /tmp/list.flat >/tmp/vfioctl.devs

count=$(wc -l </tmp/lspci.devs)
[ "$count" -ge 10 ] || fail "lspci shows only $count devices; the lab has 14"
cut -d' ' -f1 /tmp/lspci.devs | sort >/tmp/a.lspci
cut -d' ' -f1 /tmp/vfioctl.devs | sort >/tmp/a.vfioctl
if cmp -s /tmp/a.lspci /tmp/a.vfioctl; then
    ok "the same $count device addresses"
else
    fail "device addresses differ (< lspci, > vfioctl):"; diff /tmp/a.lspci /tmp/a.vfioctl | sed 's/^/    /'
fi

while read -r addr ven dev cls drv; do
    line=$(grep "^$addr " /tmp/vfioctl.devs) || continue
    set -- $line
    progif=$(awk -v a="$addr" '$1 == a { print $2 }' /tmp/lspci.progif)
    [ "$2" = "$ven" ] || fail "$addr vendor_id: lspci $ven, vfioctl $2"
    [ "$3" = "$dev" ] || fail "$addr device_id: lspci $dev, vfioctl $3"
    [ "$4" = "$cls${progif:-00}" ] || fail "$addr class: lspci $cls${progif:-00}, vfioctl $4"
    [ "$5" = "$drv" ] || fail "$addr driver: lspci $drv, vfioctl $5"
done </tmp/lspci.devs
[ "$LAB_FAILURES" -eq 0 ] && ok "vendor, device, class and driver agree for every device"

# BARs: lspci -vv prints "Region N: Memory at HEX (...) [size=S]" / "Region N: I/O ports at HEX [size=S]".
awk '
    function hex(s,    i, c, v) { v = 0; s = tolower(s); for (i = 1; i <= length(s); i++) { c = index("0123456789abcdef", substr(s, i, 1)); v = v * 16 + c - 1 }; return v }
    function size(s,    n, u) { n = s; u = s; sub(/[KMGT]$/, "", n); sub(/^[0-9]+/, "", u)
        return n * (u == "K" ? 1024 : u == "M" ? 1048576 : u == "G" ? 1073741824 : u == "T" ? 1099511627776 : 1) }
    /^[0-9a-f]{4}:/ { addr = $1; next }
    /^\tRegion [0-5]: (Memory|I\/O ports) at [0-9a-f]+/ {
        if ($0 ~ /\[disabled\]|\[virtual\]/) next
        idx = $2; sub(/:$/, "", idx)
        kind = ($3 == "Memory") ? "mem" : "io"
        for (i = 1; i <= NF; i++) if ($i == "at") start = $(i + 1)
        if (!match($0, /\[size=[0-9]+[KMGT]?\]/)) next
        s = substr($0, RSTART + 6, RLENGTH - 7)
        printf "%s %s %s %.0f %.0f\n", addr, idx, kind, hex(start), size(s)
    }
' /tmp/lspci.vv | sort >/tmp/lspci.bars
awk -F= '
    /^\[[0-9]+\]\.address=/ { split($1, a, /[][]/); addr[a[2]] = $2 }
    /^\[[0-9]+\]\.bars\[[0-9]+\]\.(index|kind|start|size)=/ {
        split($1, a, /[][]/); k = $1; sub(/^.*\./, "", k); b[a[2], a[4], k] = $2; nb[a[2]] = (a[4] + 1 > nb[a[2]]) ? a[4] + 1 : nb[a[2]]
    }
    END { for (d in addr) for (j = 0; j < nb[d]; j++) if (b[d, j, "size"] > 0)
        printf "%s %s %s %.0f %.0f\n", addr[d], b[d, j, "index"], b[d, j, "kind"], b[d, j, "start"], b[d, j, "size"] }
' /tmp/list.flat | sort >/tmp/vfioctl.bars
nbars=$(wc -l </tmp/lspci.bars)
[ "$nbars" -ge 10 ] || fail "lspci -vv shows only $nbars BARs; expected more than 10 in the lab"
if cmp -s /tmp/lspci.bars /tmp/vfioctl.bars; then
    ok "the same $nbars BARs (index, kind, start, size)"
else
    fail "BARs differ (< lspci, > vfioctl; address index kind start size):"; diff /tmp/lspci.bars /tmp/vfioctl.bars | sed 's/^/    /'
fi
lab_finish
