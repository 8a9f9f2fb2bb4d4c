import ArgumentParser
import TextFormat
import VFIO

extension BAR {
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
            let (number, access) = try register.access(sysfsRoot: global.resolvedRoot.path, command: "bar write", writing: value.value)
            if global.json {
                try BARAccessJSON(register, value: number, access: access).print(json: true)
            }
        }
    }
}
