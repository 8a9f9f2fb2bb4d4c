# lab: packaged
# packaged-binary: the Debian package's vfioctl (scripts/build-deb's .deb, unpacked at
# /opt/vfioctl-deb; stripped, built with --static-swift-stdlib) runs in this guest, which has no
# Swift, and gives the same answers as the built vfioctl: `--version`, `groups` and `doctor`
# (text and --json), on the guest as booted and with edu bound to vfio-pci.
. /lab/bin/lab-lib.sh
trap 'vfioctl restore --all >/dev/null 2>&1; lab_restore' EXIT
PKG=/opt/vfioctl-deb/usr/bin/vfioctl
[ -x $PKG ] || { fail "no packaged vfioctl at $PKG"; lab_finish; }
command -v swift >/dev/null && fail "the guest has a Swift toolchain" || ok "no swift in the guest"
check_eq "packaged --version equals the built one" "$(vfioctl --version)" "$($PKG --version 2>&1)"

same() { # LABEL COMMAND...: the built and the packaged vfioctl print the same, with the same status
    label=$1; shift
    vfioctl "$@" >/tmp/built.out 2>&1; built_rc=$?
    $PKG "$@" >/tmp/pkg.out 2>&1; pkg_rc=$?
    if [ "$built_rc" = "$pkg_rc" ] && cmp -s /tmp/built.out /tmp/pkg.out; then
        ok "$label: the same $(wc -l </tmp/pkg.out) lines, exit $pkg_rc"
    else
        fail "$label differs (exit $built_rc vs $pkg_rc): $(diff /tmp/built.out /tmp/pkg.out | head -10)"
    fi
}
compare_all() {
    same "groups ($1)" groups
    same "groups --json ($1)" groups --json
    same "doctor ($1)" doctor
    same "doctor --json ($1)" doctor --json
}
compare_all "as booted"
grep -q '"verdict"' /tmp/pkg.out && ok "the packaged doctor --json has a verdict" || fail "packaged doctor --json: $(head -5 /tmp/pkg.out)"
$PKG bind 0000:00:02.0 >/tmp/bind.out 2>&1 || fail "packaged bind of edu: $(cat /tmp/bind.out)"
check_eq "edu's driver after the packaged bind" vfio-pci "$(dev_driver 0000:00:02.0)"
compare_all "edu on vfio-pci"
$PKG unbind 0000:00:02.0 >/dev/null 2>&1 || fail "packaged unbind of edu"
lab_finish
