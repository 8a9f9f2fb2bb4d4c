import ArgumentParser
import PCIInventory
import TextFormat
import VFIO

extension Bar {
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
    }
}

enum BarAccess: String {
    case mmap, pread, pwrite
}

/// `bar read/write --json`: the value as hex text, since JSON numbers lose 64-bit precision.
struct BarAccessJSON: Encodable {
    let address: String
    let bar: Int
    let offset: UInt64
    let width: Int
    let value: String
    let access: String

    init(_ register: Bar.Register, value: UInt64, access: BarAccess) {
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
