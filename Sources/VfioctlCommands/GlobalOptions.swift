import ArgumentParser
import Foundation
import PCIInventory

/// Options every command takes. Declared on the root command and on each subcommand, so they
/// may be written before or after the subcommand's name.
public struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Read sysfs from this directory instead of /sys (also: VFIOCTL_SYSFS_ROOT).",
        valueName: "dir"))
    public var sysfsRoot: String?

    @Flag(name: .long, help: "Print machine-readable JSON (schema in docs/json.md).")
    public var json = false

    public init() {}

    public var resolvedRoot: SysfsRoot {
        SysfsRoot.resolve(option: sysfsRoot, environment: ProcessInfo.processInfo.environment)
    }

    /// libpci's name database; `VFIOCTL_PCI_IDS` points it at another pci.ids.
    func nameDatabase() -> PCINameDatabase {
        PCINameDatabase(idsFile: ProcessInfo.processInfo.environment["VFIOCTL_PCI_IDS"])
    }
}


/// An error that ends a command with one line on stderr and a non-zero status.
public struct CommandFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
