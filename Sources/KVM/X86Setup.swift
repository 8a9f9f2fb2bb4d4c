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

/// The x86 data segment registers whose base a real-mode guest can be given.
public enum X86DataSegment: Sendable, CaseIterable {
    /// DS, ES, FS and GS.
    case ds, es, fs, gs
}

extension VirtualCPU {
    /// Sets a data segment's base in its hidden descriptor cache, leaving the selector: a
    /// real-mode guest then reaches [base, base + 64 KiB) through that segment (a device BAR or
    /// the local APIC above 1 MiB, say) for as long as it does not reload the register.
    public func setSegmentBase(_ segment: X86DataSegment, _ base: UInt64) throws(KVMError) {
        var sregs = try specialRegisters()
        switch segment {
        case .ds: sregs.ds.base = base
        case .es: sregs.es.base = base
        case .fs: sregs.fs.base = base
        case .gs: sregs.gs.base = base
        }
        try setSpecialRegisters(sregs)
    }
}
