import KVM
import TextFormat
import VFIO

/// Guest RAM mapped for device DMA at IOVA = guest-physical address, so an address the guest
/// hands its device (a gpa) is the address the device uses. Goes through the DMA space's own
/// books (`DMASpace.mapDMA(unsafeAddress:...)`, type1 or iommufd alike): the IOVA range is
/// reserved in its table, the pin budget is checked before the kernel pins anything, and the
/// space holds the RAM until the mapping is gone, so the RAM stays mapped in this process
/// while the device may reach it, even if its memslot is deleted and every other holder lets go.
public final class GuestRAMDMAMapping {
    /// The DMA space (container or IOAS) whose IOMMU table holds the mapping.
    public let space: any DMASpace
    /// The guest RAM mapped (also held by the space while mapped).
    public let memory: GuestMemory
    /// The mapping as the space keeps it.
    public let mapping: DMAMapping
    /// The IOVA, equal to the RAM's guest-physical address.
    public var iova: UInt64 { mapping.iova }
    /// Bytes mapped: all of `memory`.
    public var size: UInt64 { mapping.size }
    /// False once `unmap` ran.
    public private(set) var isMapped = true

    /// Maps all of `memory`, which the guest sees at `guestPhysicalAddress`. With
    /// `deviceAddressBits`, refuses (before asking the kernel) a range the device cannot reach.
    public init(space: any DMASpace, memory: GuestMemory, guestPhysicalAddress: UInt64,
                deviceAddressBits: Int? = nil) throws(PassthroughError) {
        if let bits = deviceAddressBits {
            try DMAReach.check(iova: guestPhysicalAddress, size: UInt64(memory.size), addressBits: bits)
        }
        guard let base = UnsafeMutableRawPointer(bitPattern: UInt(memory.hostAddress)) else {
            throw .dma("guest memory has no host address")
        }
        // Safety: `memory` is one live mapping of exactly this address and size, and the
        // space holds it (owner) until the DMA mapping is gone, so it stays mapped meanwhile.
        // The guest and the device share it; this process reads it only as guest memory.
        self.mapping = try viaVFIO { () throws(VFIOError) in
            try unsafe space.mapDMA(unsafeAddress: base, size: UInt64(memory.size), iova: guestPhysicalAddress,
                                    isDeviceMemory: false, owner: memory, readable: true, writable: true)
        }
        self.space = space
        self.memory = memory
    }

    /// Unmaps the DMA (the RAM is released once nothing else holds it).
    public func unmap() throws(PassthroughError) {
        guard isMapped else { return }
        isMapped = false
        try viaVFIO { () throws(VFIOError) in try space.unmapDMA(mapping) }
    }

    deinit { try? unmap() }
}

/// Whether a device with an `addressBits`-bit DMA mask reaches an IOVA range. Pure.
public enum DMAReach {
    /// Throws `.dma` unless [iova, iova + size) lies below 2^addressBits.
    public static func check(iova: UInt64, size: UInt64, addressBits: Int) throws(PassthroughError) {
        guard addressBits > 0, addressBits <= 64 else { throw .dma("a DMA mask of \(addressBits) bits is not one") }
        let (end, overflow) = iova.addingReportingOverflow(size)
        guard !overflow else { throw .dma("IOVA range \(iova.hex()) + \(size.hex()) wraps") }
        guard addressBits == 64 || end <= UInt64(1) << UInt64(addressBits) else {
            throw .dma("IOVA range \(iova.hex())-\(end.hex()) is beyond the device's \(addressBits)-bit DMA mask (it reaches below \((UInt64(1) << UInt64(addressBits)).hex()))")
        }
    }
}
