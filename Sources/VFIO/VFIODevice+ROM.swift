#if canImport(Glibc)
import Glibc
#endif
import PCIInventory
import SystemCalls
import SystemPackage
import TextFormat

extension VFIODevice {
    /// The expansion ROM through VFIO's ROM region (vfio-pci enables the ROM BAR, or reads the
    /// shadow copy of a boot display, only for the duration of each read). Read in 64 KiB preads
    /// up to the region's size, stopping early where the kernel returns no more bytes.
    public func readROM() throws(VFIOError) -> [UInt8] {
        let region = try regionInfo(PCIRegion.rom)
        guard region.size > 0 else { throw .emptyRegion(index: region.index) }
        guard region.isReadable else { throw .regionAccessDenied(index: region.index, access: "read") }
        guard let size = Int(exactly: region.size) else { throw .outOfRange(offset: 0, width: 0, size: region.size) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while bytes.count < size {
            let want = min(chunk.count, size - bytes.count)
            // region.offset + bytes.count cannot overflow: both are below the region's end, which
            // the kernel placed inside the device file's 64-bit offset space.
            let position = Int64(region.offset) + Int64(bytes.count)
            let count = try withErrno("pread of the ROM region of \(address) at \(bytes.count.hex())") {
                try chunk.withUnsafeMutableBytes { buffer in
                    // Safety: reads into `chunk`'s own storage, at most `want` <= its size bytes.
                    try fd.read(fromAbsoluteOffset: position, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
                }
            }
            if count == 0 { break }
            bytes += chunk[0..<count]
        }
        return bytes
    }
}

/// A device's expansion ROM image and where it was read from.
public struct DeviceROM: Sendable, Equatable {
    /// Where the image came from.
    public enum Source: Sendable, Equatable, CustomStringConvertible {
        /// VFIO's ROM region (the device is on a VFIO driver).
        case vfioRegion
        /// The live kernel's sysfs `rom` attribute (enabled, read, disabled again).
        case sysfs
        /// The `rom` file of a copied sysfs tree, read as it is.
        case copiedTree(root: String)

        /// How the source is named in messages: "VFIO ROM region".
        public var description: String {
            switch self {
            case .vfioRegion: return "VFIO ROM region"
            case .sysfs: return "sysfs rom"
            case .copiedTree(let root): return "rom file of the copied tree \(root)"
            }
        }
    }

    /// The image's bytes.
    public let bytes: [UInt8]
    /// Where they were read from.
    public let source: Source

    /// Reads `device`'s ROM the one safe way for its state: through VFIO when it is on a VFIO
    /// driver (the sysfs attribute would enable the BAR under the VFIO user's feet), through the
    /// sysfs attribute otherwise (which needs root, since it enables the ROM BAR), and a copied
    /// tree's `rom` file as it is (there is no device behind it, and nothing is written there).
    public static func read(_ device: PCIDevice, root: SysfsRoot, isPrivileged: Bool = getuid() == 0) throws(DeviceROMError) -> DeviceROM {
        let attribute = SysfsROMAttribute(root: root, address: device.address)
        guard device.rom != nil || !SafeFile.isAbsent(attribute.path) else { throw .noROM(device.address) }
        if root.isSystem, let driver = device.driver, GroupViability.isVFIODriver(driver) {
            do throws(VFIOError) {
                let vfio = try openVFIODevice(device.address, sysfsRoot: root.path)
                return DeviceROM(bytes: try vfio.readROM(), source: .vfioRegion)
            } catch { throw .vfio(device.address, error) }
        }
        guard isPrivileged || !root.isSystem else { throw .needsRoot(device.address) }
        do throws(ROMReadError) {
            return DeviceROM(bytes: try ROMReader.read(root: root, address: device.address),
                             source: root.isSystem ? .sysfs : .copiedTree(root: root.path))
        } catch { throw .unreadable(error) }
    }
}

/// Why a device's ROM could not be read, with what to do.
public enum DeviceROMError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No ROM BAR in the resource file and no `rom` attribute.
    case noROM(PCIAddress)
    /// The device is on a VFIO driver and reading the ROM region failed.
    case vfio(PCIAddress, VFIOError)
    /// Reading through sysfs enables the ROM BAR, which needs root.
    case needsRoot(PCIAddress)
    /// The sysfs attribute (or the copied tree's file) could not be read.
    case unreadable(ROMReadError)

    /// One line that names the device and what to do.
    public var description: String {
        switch self {
        case .noROM(let address):
            return "\(address) has no option ROM (no ROM BAR in its resource file, no rom attribute); nothing to read"
        case .vfio(let address, let error):
            return "rom: reading \(address)'s ROM through VFIO failed: \(error.description) (is the device in use by a VM?)"
        case .needsRoot(let address):
            return "rom: reading \(address)'s ROM through sysfs needs root (it enables the ROM BAR); run as root"
        case .unreadable(let error):
            return "rom: \(error.description)"
        }
    }
}
