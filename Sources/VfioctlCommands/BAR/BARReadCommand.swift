import ArgumentParser
import VFIO

extension BAR {
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
            let (value, access) = try register.access(sysfsRoot: global.resolvedRoot.path, command: "bar read")
            try BARAccessJSON(register, value: value, access: access).print(json: global.json)
        }
    }
}
