import ArgumentParser

public struct VfioctlCLI: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "vfioctl",
        abstract: "Inspect PCI devices and IOMMU groups, and manage VFIO passthrough.",
        subcommands: [ListCommand.self, GroupsCommand.self, ShowCommand.self, BindCommand.self, UnbindCommand.self, RestoreCommand.self, PersistCommand.self, DoctorCommand.self, Bar.self, KVMCommand.self, DMA.self, VMCommand.self]
    )
    @OptionGroup public var global: GlobalOptions
    public init() {}
}
