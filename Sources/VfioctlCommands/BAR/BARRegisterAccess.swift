import ArgumentParser
import PCIInventory
import TextFormat
import VFIO

extension BAR {
    /// Options that name one register.
    struct Register: ParsableArguments {
        @OptionGroup var device: DeviceArgument

        @Option(name: .long, help: ArgumentHelp("The BAR, 0-5.", valueName: "n"))
        var bar: BARIndex

        @Option(name: .long, help: ArgumentHelp("Byte offset in the BAR, decimal or 0x-prefixed hex (below 128 TiB).", valueName: "offset"))
        var offset: ByteOffset = ByteOffset(0)

        @Option(name: .long, help: ArgumentHelp("Access width in bytes: 1, 2, 4 or 8.", valueName: "bytes"))
        var width: AccessWidth = .dword

        var address: PCIAddress { device.address }

        /// One access, the way a VMM makes it: through an mmap of the BAR, or pread/pwrite
        /// where the region cannot be mapped (an I/O-port BAR). Writes `writing` when given,
        /// reads otherwise; returns the value read or written and how.
        func access(sysfsRoot: String, command: String, writing: UInt64? = nil) throws -> (UInt64, BARAccess) {
            let offset = self.offset.value
            do throws(VFIOError) {
                let device = try openVFIODevice(address, sysfsRoot: sysfsRoot)
                let region = try device.regionInfo(bar.region)
                if region.isMappable {
                    let mapping = try device.map(region, writable: writing != nil)
                    guard let index = Int(exactly: offset) else {
                        throw VFIOError.outOfRange(offset: offset, width: width.rawValue, size: region.size)
                    }
                    let value: UInt64
                    if let writing {
                        try mapping.store(writing, width, at: index)
                        value = writing
                    } else {
                        value = try mapping.load(width, at: index)
                    }
                    try mapping.unmap()
                    return (value, .mmap)
                }
                let verb = writing == nil ? "reading with pread" : "writing with pwrite"
                note("BAR \(bar) of \(address) cannot be mmapped (region flags \(region.flags.hex())); \(verb) instead")
                if let writing {
                    try device.write(writing, to: region, offset: offset, width: width)
                    return (writing, .pwrite)
                }
                return (try device.read(region, offset: offset, width: width), .pread)
            } catch {
                throw CommandFailure("\(command) \(address) BAR \(bar): \(error.description)")
            }
        }
    }
}

enum BARAccess: String {
    case mmap, pread, pwrite
}

/// `bar read/write --json`: the value as hex text, since JSON numbers lose 64-bit precision.
struct BARAccessJSON: Encodable {
    let address: String
    let bar: Int
    let offset: UInt64
    let width: Int
    let value: String
    let access: String

    init(_ register: BAR.Register, value: UInt64, access: BARAccess) {
        address = register.address.description
        bar = register.bar.value
        offset = register.offset.value
        width = register.width.rawValue
        // Zero-padded to the access width: 0x010000ed for 4 bytes.
        self.value = value.hex(digits: register.width.rawValue * 2)
        self.access = access.rawValue
    }

    func print(json: Bool) throws {
        Swift.print(json ? try JSONOutput.encode(self) : value)
    }
}
