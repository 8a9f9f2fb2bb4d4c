import ArgumentParser

public struct VfioctlCLI: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "vfioctl",
        abstract: "Inspect PCI devices and IOMMU groups, and manage VFIO passthrough.",
        discussion: """
            --json prints machine-readable output (schema in docs/json.md); --sysfs-root DIR \
            reads another sysfs tree; --version prints the version (with --json, as JSON). \
            `vfioctl help <command>` shows each command's examples.

            Exit status: 0 success, 1 failure, 2 `doctor` found a problem, 3 `bind` \
            refused, 4 `bind` rolled back, 64 usage error (README: "Exit codes").

            Examples:
              vfioctl doctor
              vfioctl groups
              vfioctl bind 0000:01:00.0 --group
              vfioctl --sysfs-root /tmp/sys-copy list --json
            """,
        version: VfioctlVersion.current,
        subcommands: [ListCommand.self, GroupsCommand.self, ShowCommand.self, BindCommand.self, UnbindCommand.self, RestoreCommand.self, PersistCommand.self, DoctorCommand.self, BAR.self, DeviceCommand.self, KVMCommand.self, DMA.self, IRQCommand.self, VMCommand.self, ResetCommand.self, RebarCommand.self, ROMCommand.self, CDICommand.self, SRIOVCommand.self]
    )
    @OptionGroup public var global: GlobalOptions
    public init() {}
}
