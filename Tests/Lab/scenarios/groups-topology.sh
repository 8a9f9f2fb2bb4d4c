# groups-topology: `vfioctl groups --json` describes the lab's IOMMU groups as the kernel made
# them: the pci-bridge group holds the bridge and both devices behind it, the ICH9 functions
# 00:1f.0/.2/.3 share one group, every other device is alone in its own. Viability and blockers
# follow the drivers actually bound, also after a device is moved to vfio-pci.
. /lab/bin/lab-lib.sh

# The topology the lab boots (Tests/Lab/lab, qemu_args), as sorted member lists.
EXPECTED="0000:00:00.0
0000:00:01.0
0000:00:02.0
0000:00:03.0
0000:00:04.0
0000:00:05.0
0000:00:06.0 0000:01:01.0 0000:01:02.0
0000:00:1f.0 0000:00:1f.2 0000:00:1f.3
0000:00:1f.5
0000:02:00.0"

# What the kernel says: one line per group, "N member member ...".
kernel_groups() {
    for g in /sys/kernel/iommu_groups/*; do
        echo "${g##*/} $(ls "$g/devices" | sort | tr '\n' ' ')"
    done | sed 's/ *$//' | sort -n
}
# Independent of vfioctl: a member blocks its group if it has a driver other than vfio-pci or
# pci-stub (bridges may keep pcieport/shpchp). Prints the blockers' addresses, sorted.
kernel_blockers() {
    for d in $(ls "/sys/kernel/iommu_groups/$1/devices"); do
        drv=$(dev_driver "$d")
        case $drv in
            "" | vfio-pci | pci-stub) ;;
            pcieport | shpchp) [ "$(cut -c3-6 "$(sysfs_dev "$d")/class")" = 0604 ] || echo "$d" ;;
            *) echo "$d" ;;
        esac
    done | sort | tr '\n' ' ' | sed 's/ *$//'
}
# What vfioctl says, in the same form, from `groups --json`.
vfioctl_groups() { # FLAT
    awk -F= '
        /^\[[0-9]+\]\.group=/ { split($1, a, /[][]/); g[a[2]] = $2 }
        /^\[[0-9]+\]\.devices\[[0-9]+\]=/ { split($1, a, /[][]/); m[a[2]] = m[a[2]] " " $2 }
        END { for (i in g) print g[i] m[i] }
    ' "$1" | while read -r n members; do
        echo "$n $(echo $members | tr ' ' '\n' | sort | tr '\n' ' ')"
    done | sed 's/ *$//' | sort -n
}
vfioctl_field() { # FLAT GROUP FIELD: a scalar of the group whose number is GROUP
    awk -F= -v grp="$2" -v f="$3" '
        /^\[[0-9]+\]\.group=/ { split($1, a, /[][]/); if ($2 == grp) want = a[2] }
        { lines[NR] = $0 }
        END { for (i = 1; i <= NR; i++) if (index(lines[i], "[" want "]." f "=") == 1) { sub(/^[^=]*=/, "", lines[i]); print lines[i] } }
    ' "$1"
}
vfioctl_blockers() { # FLAT GROUP
    awk -F= -v grp="$2" '
        /^\[[0-9]+\]\.group=/ { split($1, a, /[][]/); if ($2 == grp) want = a[2] }
        { lines[NR] = $0 }
        END { for (i = 1; i <= NR; i++) if (index(lines[i], "[" want "].blockers[") == 1 && lines[i] ~ /\]\.address=/) { sub(/^[^=]*=/, "", lines[i]); print lines[i] } }
    ' "$1" | sort | tr '\n' ' ' | sed 's/ *$//'
}

compare_groups() { # LABEL
    vfioctl groups --json >/tmp/groups.json 2>/tmp/groups.err || { fail "$1: vfioctl groups --json exited $?: $(cat /tmp/groups.err)"; return; }
    json_flat </tmp/groups.json >/tmp/groups.flat || { fail "$1: groups --json output is not the expected JSON"; return; }
    kernel_groups >/tmp/kernel.groups
    vfioctl_groups /tmp/groups.flat >/tmp/vfioctl.groups
    if cmp -s /tmp/kernel.groups /tmp/vfioctl.groups; then
        ok "$1: vfioctl's groups and members match the kernel's ($(wc -l </tmp/kernel.groups) groups)"
    else
        fail "$1: vfioctl's groups differ from /sys/kernel/iommu_groups:"
        diff /tmp/kernel.groups /tmp/vfioctl.groups | sed 's/^/    /'
    fi
    while read -r n members; do
        expected_viable=true
        [ -n "$(kernel_blockers "$n")" ] && expected_viable=false
        check_eq "$1: group $n ($members) viable" "$expected_viable" "$(vfioctl_field /tmp/groups.flat "$n" viable)"
        check_eq "$1: group $n blockers" "$(kernel_blockers "$n")" "$(vfioctl_blockers /tmp/groups.flat "$n")"
    done </tmp/kernel.groups
}

# 1. The lab's topology is what the scenarios assume (checks the lab itself).
kernel_groups | cut -d' ' -f2- | sort >/tmp/kernel.sets
echo "$EXPECTED" | sort >/tmp/expected.sets
if cmp -s /tmp/expected.sets /tmp/kernel.sets; then
    ok "the kernel's IOMMU groups are the lab topology"
else
    fail "the kernel's IOMMU groups are not the lab topology:"; diff /tmp/expected.sets /tmp/kernel.sets | sed 's/^/    /'
fi

# 2. vfioctl agrees with the kernel, with the drivers as booted.
compare_groups "as booted"
# Drivers as booted: e1000e on 00:04.0 and e1000 behind the bridge block their groups.
g4=$(dev_group 0000:00:04.0); gb=$(dev_group 0000:01:01.0)
check_eq "e1000e's group $g4 is blocked by it" "0000:00:04.0" "$(vfioctl_blockers /tmp/groups.flat "$g4")"
check_eq "the bridge group $gb is blocked by e1000 behind the bridge" "0000:01:01.0" "$(vfioctl_blockers /tmp/groups.flat "$gb")"
check_eq "the bridge group $gb is not viable" false "$(vfioctl_field /tmp/groups.flat "$gb" viable)"

# 3. After moving e1000e to vfio-pci its group becomes viable, and vfioctl sees that.
lab_bind 0000:00:04.0 vfio-pci || fail "could not bind 0000:00:04.0 to vfio-pci"
compare_groups "e1000e on vfio-pci"
check_eq "group $g4 viable once e1000e is on vfio-pci" true "$(vfioctl_field /tmp/groups.flat "$g4" viable)"
lab_finish
