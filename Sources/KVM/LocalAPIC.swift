import CLinuxUAPI

extension VirtualCPU {
    /// Enables the vCPU's in-kernel local APIC (IA32_APIC_BASE: the base, bit 11 enable, bit 8
    /// bootstrap processor). KVM leaves it disabled at creation, and a disabled APIC drops every
    /// MSI; the guest must still set bit 8 of its spurious-vector register to take interrupts.
    /// Needs `InterruptController` (the in-kernel irqchip).
    public func enableLocalAPIC(base: UInt64 = UInt64(MSIMessage.x86AddressBase), bootstrap: Bool = true) throws(KVMError) {
        var sregs = try specialRegisters()
        sregs.apic_base = base | 1 << 11 | (bootstrap ? 1 << 8 : 0)
        try setSpecialRegisters(sregs)
    }
}
