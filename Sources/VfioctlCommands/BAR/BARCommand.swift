import ArgumentParser
import Foundation

/// `vfioctl bar`: register access to a device's BARs through VFIO, the way a VMM would do it:
/// container, group, device fd, region info, then an mmap of the region (pread/pwrite where the
/// region cannot be mapped, e.g. an I/O-port BAR).
public struct BAR: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bar",
        abstract: "Read or write a device's BAR registers through VFIO (the device must be bound to vfio-pci).",
        discussion: """
            The device's IOMMU group must be viable: every member bound to vfio-pci (or to no \
            driver). Accesses are single, naturally aligned loads and stores of 1, 2, 4 or 8 bytes \
            through an mmap of the BAR.

            `bar plan` shows where vfioctl maps each BAR for huge pages, from sysfs alone; \
            `bar touch` maps one there and reads every page. `bar info` moved to `device info`.

            Examples:
              vfioctl bar read 0000:00:02.0 --bar 0 --offset 0 --width 4
              vfioctl bar write 00:02.0 --bar 0 --offset 0x4 --width 4 0x12345678
              vfioctl bar plan 00:03.0 --skew 4K
            """,
        subcommands: [Read.self, Write.self, Plan.self, Touch.self, Config.self, Toggle.self, Info.self]
    )
    public init() {}
}

/// A note on stderr, which keeps stdout clean for --json.
func note(_ message: String) {
    FileHandle.standardError.write(Data("note: \(message)\n".utf8))
}
