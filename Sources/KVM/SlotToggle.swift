/// A memslot that leaves the guest and comes back at the same place: a device BAR whose mmap
/// is withdrawn (device reset, BAR disabled or resized) and restored. While it is absent, guest
/// accesses to its range exit as MMIO (`VMExit.mmio`), and the VMM serves them itself, the way
/// QEMU's VFIO x-no-mmap path serves BAR accesses by region read and write; `backingOffset`
/// says where in the backing an exit's access falls.
///
/// KVM accepts memslot changes while vCPUs run (it kicks them and waits until none uses the old
/// slot), so `setPresent` may be called from one thread while another runs vCPUs: once it has
/// returned, every guest access sees the new state. Not thread-safe itself, like the VM whose
/// table it changes: one thread at a time toggles and changes the VM's slots.
public final class SlotToggle {
    /// The VM the slot belongs to (held).
    public let vm: VirtualMachine
    /// The slot as it is added each time (same id, gpa, host address, flags, kind).
    public let slot: Memslot
    let backing: MemslotBacking
    /// Whether the slot is in the VM now.
    public private(set) var isPresent: Bool

    /// Adds `slot` (backed by `backing`) when `present`; otherwise only remembers it.
    public init(vm: VirtualMachine, slot: Memslot, backing: MemslotBacking, present: Bool = true) throws(KVMError) {
        self.vm = vm
        self.slot = slot
        self.backing = backing
        self.isPresent = false
        if present { try setPresent(true) }
    }

    /// Adds or deletes the slot; nothing when it is already so.
    public func setPresent(_ present: Bool) throws(KVMError) {
        guard present != isPresent else { return }
        if present {
            try vm.setMemoryRegion(slot, backing: backing)
        } else {
            try vm.deleteSlot(slot.id)
        }
        isPresent = present
    }

    /// Deletes the slot if present, adds it back if not.
    public func toggle() throws(KVMError) { try setPresent(!isPresent) }

    /// The offset into the slot's memory of an access of `length` bytes at `address`, or nil
    /// when it does not lie wholly inside the slot's range.
    public func backingOffset(forGuestPhysicalAddress address: UInt64, length: Int) -> Int? {
        guard length >= 0, address >= slot.guestPhysicalAddress else { return nil }
        let offset = address - slot.guestPhysicalAddress
        guard offset <= slot.size, UInt64(length) <= slot.size - offset else { return nil }
        return Int(offset)
    }
}
