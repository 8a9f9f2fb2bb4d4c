# irq-delivery: interrupts reach userspace on eventfds through VFIO_DEVICE_SET_IRQS, raised by
# the devices themselves (vfioctl-lab-probe irq-test: the test devices' registers). INTx from edu (with the kernel's automasking: an interrupt raised
# while the line is masked waits for the unmask, then arrives exactly once), MSI from edu,
# MSI-X from e1000e with each of its five interrupt causes routed (IVAR) to its own vector,
# each arriving on its own eventfd and no other; then a kernel-side loopback on NVMe's MSI-X
# vectors, which needs no help from the device (vfioctl irq test). Afterwards no vfio interrupt handler is left.
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0
E1000E=0000:00:04.0
NVME=0000:00:05.0
# The NIC's interface up and down once first, as on a host that used it: its driver then
# programs interrupt throttling (EITR), which outlives the move to vfio-pci.
iface=$(ls /sys/bus/pci/devices/$E1000E/net 2>/dev/null | head -n 1)
[ -n "$iface" ] && { ip link set "$iface" up; ip link set "$iface" down; } 2>/dev/null
for dev in $EDU $E1000E $NVME; do lab_bind $dev vfio-pci || fail "could not bind $dev to vfio-pci"; done

# irq_check NAME ADDRESS ARGS...: runs `vfioctl-lab-probe irq-test` (the device raises each
# vector), or with --loopback `vfioctl irq test` (the kernel signals it); checks every vector
# arrived once.
irq_check() {
    name=$1 addr=$2; shift 2
    case " $* " in
        *" --loopback "*) vfioctl irq test $addr "$@" --json ;;
        *) vfioctl-lab-probe irq-test $addr "$@" --json ;;
    esac >/tmp/irq.json 2>/tmp/irq.err || fail "$name: irq test exited $? ($(cat /tmp/irq.err))"
    json_flat </tmp/irq.json >/tmp/irq.flat
    sed -n 's/^/  /p' /tmp/irq.flat | grep -E 'source|recipe|vector_count|signals|stray|ok' | tr '\n' ' '; echo
    check_eq "$name: every vector arrived once, nowhere else" true "$(json_get /tmp/irq.flat .ok)"
}

irq_check "edu INTx" $EDU --index intx
check_eq "edu INTx: raised by the device" edu "$(json_get /tmp/irq.flat .recipe)"
check_eq "edu INTx: one signal" 1 "$(json_get /tmp/irq.flat '.vectors[0].signals')"
check_eq "edu INTx: nothing while masked" 0 "$(json_get /tmp/irq.flat .masking.signals_while_masked)"
check_eq "edu INTx: the pending one after unmask" 1 "$(json_get /tmp/irq.flat .masking.signals_after_unmask)"

irq_check "edu MSI" $EDU --index msi
check_eq "edu MSI: one signal" 1 "$(json_get /tmp/irq.flat '.vectors[0].signals')"

# The host's e1000e driver left interrupt throttling on (EITR survives the PM reset). QEMU 7.2
# arms a throttling timer on every MSI-X message and aborts the whole VM if it expires after
# MSI-X is disabled: the recipe lowers EITR and lets the timers run out before disabling.
eitr=$(vfioctl bar read $E1000E --bar 0 --offset 0xe8)
[ "$eitr" != 0x00000000 ] && ok "e1000e EITR0 left on by the host driver ($eitr)" || fail "EITR0 is 0: the throttling case is not exercised"
irq_check "e1000e MSI-X" $E1000E --index msix
check_eq "e1000e EITR0 after: throttling at its lowest" 0x00000000 "$(vfioctl bar read $E1000E --bar 0 --offset 0xe8)"
check_eq "e1000e MSI-X: device vectors" 5 "$(json_get /tmp/irq.flat .vector_count)"
for v in 0 1 2 3 4; do
    check_eq "e1000e MSI-X vector $v: once, on its own eventfd (signals, other vectors signalled)" "1 0" \
        "$(json_get /tmp/irq.flat ".vectors[$v].signals") $(grep -c "^\.vectors\[$v\]\.stray_vectors\[" /tmp/irq.flat)"
done

irq_check "e1000e INTx" $E1000E --index intx
check_eq "e1000e INTx: the pending one after unmask" 1 "$(json_get /tmp/irq.flat .masking.signals_after_unmask)"

# Loopback on NVMe's MSI-X: the kernel signals each of 8 vectors' eventfds.
irq_check "NVMe MSI-X loopback" $NVME --index msix --loopback --vectors 8
check_eq "NVMe loopback: 8 vectors checked" 8 "$(grep -c '^\.vectors\[[0-9]*\]\.vector=' /tmp/irq.flat)"
check_eq "NVMe loopback: raised by the kernel" loopback "$(json_get /tmp/irq.flat .source)"
# `vfioctl irq test` is the loopback with or without the flag (no device registers shipped).
vfioctl irq test $EDU --index msi --json >/tmp/irq.json 2>/tmp/irq.err || fail "vfioctl irq test without --loopback exited $? ($(cat /tmp/irq.err))"
check_eq "vfioctl irq test: kernel loopback by default" "loopback true" "$(json_flat </tmp/irq.json >/tmp/irq.flat; echo "$(json_get /tmp/irq.flat .source) $(json_get /tmp/irq.flat .ok)")"

# Nothing left behind: the host kernel has no vfio interrupt handlers once the runs are over,
# and a second run on the same device works.
check_eq "no vfio interrupt handlers left in /proc/interrupts" 0 "$(grep -c 'vfio-' /proc/interrupts)"
irq_check "e1000e MSI-X again, 2 vectors" $E1000E --index msix --vectors 2

# Bad input: a device vfioctl cannot drive, and an index it does not have.
if vfioctl-lab-probe irq-test $NVME --index msix >/tmp/err.out 2>&1; then fail "nvme device-raised MSI-X accepted"; else
    grep -q -- "vfioctl irq test" /tmp/err.out && ok "unknown device: says to use vfioctl irq test" || fail "unclear error: $(cat /tmp/err.out)"
fi
if vfioctl-lab-probe irq-test $EDU --index msix >/tmp/err.out 2>&1; then fail "edu MSI-X accepted"; else
    ok "edu has no MSI-X: $(tail -n 1 /tmp/err.out)"
fi
lab_finish
