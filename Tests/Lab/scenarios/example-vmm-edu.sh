# example-vmm-edu: examples/vmm-edu, a package of its own that uses vfioctl's public products
# only, assigns edu to a nested KVM guest through one PassthroughVM: BAR0 is a memslot the guest
# programs directly, guest RAM is DMA-mapped at IOVA = gpa, and edu's MSI reaches the guest's own
# handler through an eventfd and KVM_IRQFD. The guest raises 20 interrupts, then has edu DMA a
# pattern through the device into its RAM (two more), with one exit to userspace for the run;
# then the same with edu's INTx through an irqfd with a resample eventfd to an IOAPIC pin.
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0
[ -e /dev/kvm ] || fail "no /dev/kvm in the lab guest (nested KVM)"
lab_bind $EDU vfio-pci || fail "could not bind $EDU to vfio-pci"
for mode in msi intx; do
    flag=; [ $mode = intx ] && flag=--intx
    vmm-edu $EDU 20 $flag >/tmp/vmm-edu.out 2>&1
    rc=$?
    sed 's/^/  /' /tmp/vmm-edu.out
    check_eq "$mode: vmm-edu exit status" 0 "$rc"
    check_eq "$mode: interrupts counted by the guest's handler" 22 \
        "$(sed -n 's/^interrupts counted by the guest.s handler: \([0-9]*\) .*/\1/p' /tmp/vmm-edu.out)"
    check_eq "$mode: exits to userspace for the whole run" 1 \
        "$(sed -n 's/^exits to userspace: \([0-9]*\) .*/\1/p' /tmp/vmm-edu.out)"
    grep -q "^DMA: 1024 bytes RAM -> edu -> RAM at gpa 0x100000: match" /tmp/vmm-edu.out && ok "$mode: edu DMA into guest RAM at IOVA = gpa" || fail "$mode: no DMA match"
done
lab_finish
