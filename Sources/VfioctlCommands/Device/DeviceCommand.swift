import ArgumentParser

/// `vfioctl device`: what VFIO says about a whole device (not one BAR).
public struct DeviceCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "device",
        abstract: "Show VFIO's view of a device bound to vfio-pci: regions, interrupts, reset.",
        discussion: """
            Examples:
              vfioctl device info 0000:01:00.0
              vfioctl device info 01:00.0 --reset --json
            """,
        subcommands: [Info.self]
    )
    public init() {}
}
