import KVM
import VFIO

/// Guest RAM mapped for device DMA at IOVA = guest-physical address, so an address the guest
/// hands its device (a gpa) is the address the device uses. Holds the container and the RAM:
/// the kernel pins the pages, and the RAM must stay mapped in this process until the DMA
/// mapping is gone, so `unmap()` (or deinit) unmaps the DMA before the RAM can be released.
public final class GuestRAMDMAMapping {
    public let container: VfioContainer
    public let memory: GuestMemory
    public let iova: UInt64
    public var size: UInt64 { UInt64(memory.size) }
    public private(set) var isMapped = true

    /// Maps all of `memory`, which the guest sees at `guestPhysicalAddress`. With
    /// `deviceAddressBits`, refuses (before asking the kernel) a range the device cannot reach.
    public init(container: VfioContainer, memory: GuestMemory, guestPhysicalAddress: UInt64,
                deviceAddressBits: Int? = nil) throws(PassthroughError) {
        if let bits = deviceAddressBits {
            try DMAReach.check(iova: guestPhysicalAddress, size: UInt64(memory.size), addressBits: bits)
        }
        guard let base = UnsafeMutableRawPointer(bitPattern: UInt(memory.hostAddress)) else {
            throw .dma("guest memory has no host address")
        }
        // Contract: `memory` stays mapped while this object lives (it holds it), so the pinned
        // range remains this process's memory until unmapDMA.
        try viaVFIO { () throws(VFIOError) in
            try container.mapDMA(address: base, size: UInt64(memory.size), iova: guestPhysicalAddress)
        }
        self.container = container
        self.memory = memory
        self.iova = guestPhysicalAddress
    }

    public func unmap() throws(PassthroughError) {
        guard isMapped else { return }
        isMapped = false
        try viaVFIO { () throws(VFIOError) in _ = try container.unmapDMA(iova: iova, size: size) }
    }

    deinit { try? unmap() }
}

/// Whether a device with an `addressBits`-bit DMA mask reaches an IOVA range. Pure.
public enum DMAReach {
    public static func check(iova: UInt64, size: UInt64, addressBits: Int) throws(PassthroughError) {
        guard addressBits > 0, addressBits <= 64 else { throw .dma("a DMA mask of \(addressBits) bits is not one") }
        let (end, overflow) = iova.addingReportingOverflow(size)
        guard !overflow else { throw .dma("IOVA range \(hex(iova)) + \(hex(size)) wraps") }
        guard addressBits == 64 || end <= UInt64(1) << UInt64(addressBits) else {
            throw .dma("IOVA range \(hex(iova))-\(hex(end)) is beyond the device's \(addressBits)-bit DMA mask (it reaches below \(hex(UInt64(1) << UInt64(addressBits))))")
        }
    }
}
