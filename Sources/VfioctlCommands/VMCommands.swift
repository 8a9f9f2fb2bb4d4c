import ArgumentParser

/// `vfioctl vm ...`: handing a device bound to vfio-pci to a real VMM.
public struct VMCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "vm",
        abstract: "Hand a device bound to vfio-pci to a real VMM (settings for QEMU, libvirt, Cloud Hypervisor).",
        discussion: """
            The tiny KVM guests that check passthrough on the lab's test devices (vm-smoke, \
            vm-dma-smoke) are in the vfioctl-lab-probe tool built from the source tree.

            Example:
              vfioctl vm config 0000:01:00.0 --slot --vmm libvirt
            """,
        subcommands: [VMConfigCommand.self, Smoke.self, DMASmoke.self]
    )
    @OptionGroup var global: GlobalOptions
    public init() {}
}
