#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import Synchronization
import SystemPackage

/// One vCPU's dirty ring: an array of kvm_dirty_gfn shared with KVM, mapped from the vCPU fd at
/// KVM_DIRTY_LOG_PAGE_OFFSET pages. KVM publishes an entry by setting its DIRTY flag (a release
/// store); userspace reads entries in order from its own index, and gives each back by setting
/// RESET, after which KVM_RESET_DIRTY_RINGS recycles them.
final class DirtyRing {
    let mapping: MemoryMapping
    let entryCount: UInt32
    let vcpu: UInt32
    /// Next entry to read; only ever increases (wrapping), so no entry is skipped.
    private(set) var fetchIndex: UInt32 = 0

    init(vcpuFD: FileDescriptor, bytes: Int, vcpu: UInt32) throws(KVMError) {
        mapping = try MemoryMapping(length: bytes, fd: vcpuFD, offset: Int(KVM_DIRTY_LOG_PAGE_OFFSET) * hostPageSize,
                                    what: "mmap dirty ring of vCPU \(vcpu)")
        entryCount = UInt32(bytes / MemoryLayout<kvm_dirty_gfn>.stride)
        self.vcpu = vcpu
    }

    /// Reads every published entry from `fetchIndex` on, adds (slot, page) to `found`, marks it
    /// collected, and returns how many it read. Stops at the first entry KVM has not published.
    func harvest(into found: inout [MemslotID: [UInt64]]) -> Int {
        let stride = MemoryLayout<kvm_dirty_gfn>.stride
        let flagsOffset = Int(CKVM_DIRTY_GFN_FLAGS_OFFSET)
        let slotOffset = Int(CKVM_DIRTY_GFN_SLOT_OFFSET)
        let pageOffset = Int(CKVM_DIRTY_GFN_OFFSET_OFFSET)
        var harvested = 0
        // At most one lap: a full ring never holds more than entryCount published entries.
        while harvested < Int(entryCount) {
            let entry = mapping.base + Int(fetchIndex % entryCount) * stride
            // Safety: `entry` is a kvm_dirty_gfn inside the live ring mapping; `flags` is a
            // naturally aligned UInt32, which Atomic<UInt32> matches in size and alignment.
            let flags = (entry + flagsOffset).assumingMemoryBound(to: Atomic<UInt32>.self)
            // Acquire: the slot and offset below are read only after KVM's release of DIRTY.
            guard flags.pointee.load(ordering: .acquiring) & CKVM_DIRTY_GFN_F_DIRTY != 0 else { break }
            let slot = entry.load(fromByteOffset: slotOffset, as: UInt32.self)
            let page = entry.load(fromByteOffset: pageOffset, as: UInt64.self)
            found[MemslotID(kernelValue: slot), default: []].append(page)
            // Release: KVM may recycle the entry once it sees RESET.
            flags.pointee.store(CKVM_DIRTY_GFN_F_RESET, ordering: .releasing)
            fetchIndex &+= 1
            harvested += 1
        }
        return harvested
    }
}
