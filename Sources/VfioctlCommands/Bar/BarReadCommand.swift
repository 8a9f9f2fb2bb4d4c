import ArgumentParser
import TextFormat
import VFIO

extension Bar {
    struct Read: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "read",
            abstract: "Read one register of a BAR; prints it as 0x-prefixed hex of the access width.",
            discussion: """
                Examples:
                  vfioctl bar read 0000:01:00.0 --bar 0 --offset 0x10 --width 4
                  vfioctl bar read 01:00.0 --bar 2 --width 8 --json
                """
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var register: Register

        func run() throws {
            let address = register.address, offset = register.offset.value, width = register.width
            let access: BarAccess
            let value: UInt64
            do throws(VFIOError) {
                let device = try openVFIODevice(address, sysfsRoot: global.resolvedRoot.path)
                let region = try device.regionInfo(register.bar.region)
                if region.isMappable {
                    let mapping = try device.map(region, writable: false)
                    guard let index = Int(exactly: offset) else {
                        throw VFIOError.outOfRange(offset: offset, width: width.rawValue, size: region.size)
                    }
                    value = try mapping.load(width, at: index)
                    try mapping.unmap()
                    access = .mmap
                } else {
                    note("BAR \(register.bar) of \(address) cannot be mmapped (region flags \(region.flags.hex())); reading with pread instead")
                    value = try device.read(region, offset: offset, width: width)
                    access = .pread
                }
            } catch {
                throw CommandFailure("bar read \(address) BAR \(register.bar): \(error.description)")
            }
            try BarAccessJSON(register, value: value, access: access).print(json: global.json)
        }
    }
}
