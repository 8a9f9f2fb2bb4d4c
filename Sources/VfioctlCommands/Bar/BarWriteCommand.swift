import ArgumentParser
import TextFormat
import VFIO

extension Bar {
    struct Write: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "write",
            abstract: "Write one register of a BAR.",
            discussion: """
                The value comes last, decimal or 0x-prefixed hex, and must fit --width.

                Example:
                  vfioctl bar write 0000:01:00.0 --bar 0 --offset 0x4 --width 4 0x12345678
                """
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var register: Register
        @Argument(help: ArgumentHelp("The value, decimal or 0x-prefixed hex; must fit the width.", valueName: "value"))
        var value: Number

        /// The value and the width are parsed; whether one fits the other is a rule of the pair.
        func validate() throws {
            if value.value & ~register.width.mask != 0 {
                throw ValidationError("value \(value.value.hex()) does not fit in \(register.width.rawValue) bytes")
            }
        }

        func run() throws {
            let address = register.address, offset = register.offset.value, width = register.width, number = value.value
            let access: BarAccess
            do throws(VFIOError) {
                let device = try openVFIODevice(address, sysfsRoot: global.resolvedRoot.path)
                let region = try device.regionInfo(register.bar.region)
                if region.isMappable {
                    let mapping = try device.map(region, writable: true)
                    guard let index = Int(exactly: offset) else {
                        throw VFIOError.outOfRange(offset: offset, width: width.rawValue, size: region.size)
                    }
                    try mapping.store(number, width, at: index)
                    try mapping.unmap()
                    access = .mmap
                } else {
                    note("BAR \(register.bar) of \(address) cannot be mmapped (region flags \(region.flags.hex())); writing with pwrite instead")
                    try device.write(number, to: region, offset: offset, width: width)
                    access = .pwrite
                }
            } catch {
                throw CommandFailure("bar write \(address) BAR \(register.bar): \(error.description)")
            }
            if global.json {
                try BarAccessJSON(register, value: number, access: access).print(json: true)
            }
        }
    }
}
