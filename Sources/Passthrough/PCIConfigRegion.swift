import VFIO

/// A device's PCI configuration space as the VMM reaches it: VFIO's config region for a real
/// device, a byte array in tests. The device model (`PCIDeviceModel`) reads and writes the
/// registers it does not virtualize through this, and reads the device's own header and
/// capabilities through it once, when it is made.
public protocol PCIConfigRegion: AnyObject {
    /// Reads `width` bytes (1, 2 or 4) at `offset`.
    func readConfig(_ offset: UInt64, width: AccessWidth) throws(PassthroughError) -> UInt64
    /// Writes the low `width` bytes of `value` at `offset`.
    func writeConfig(_ value: UInt64, at offset: UInt64, width: AccessWidth) throws(PassthroughError)
}

/// The config region of a VFIO device (pread/pwrite at the region's offset; vfio-pci itself
/// virtualizes some registers underneath, such as the BARs' host addresses).
public final class VFIOConfigRegion: PCIConfigRegion {
    /// The device (held).
    public let device: VFIODevice
    /// The config region's info, asked once (a guest's config cycles are frequent at boot).
    public let region: RegionInfo

    /// The config region of `device`.
    public init(device: VFIODevice) throws(PassthroughError) {
        self.device = device
        self.region = try viaVFIO { () throws(VFIOError) in try device.configRegion() }
    }

    /// One pread of the config region.
    public func readConfig(_ offset: UInt64, width: AccessWidth) throws(PassthroughError) -> UInt64 {
        try viaVFIO { () throws(VFIOError) in try device.read(region, offset: offset, width: width) }
    }

    /// One pwrite of the config region.
    public func writeConfig(_ value: UInt64, at offset: UInt64, width: AccessWidth) throws(PassthroughError) {
        try viaVFIO { () throws(VFIOError) in try device.write(value, to: region, offset: offset, width: width) }
    }
}
