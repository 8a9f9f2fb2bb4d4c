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
