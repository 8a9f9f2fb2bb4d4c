import ArgumentParser
import PCIInventory
import VFIO

extension VFIOBackendRequest: ExpressibleByArgument {}

/// `--backend auto|type1|iommufd` for every command that opens a device through VFIO.
package struct BackendOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "How to open the device: auto (iommufd where /dev/iommu and the device's VFIO device file exist, else type1), type1 (group and container) or iommufd (device file and IOAS).",
        valueName: "backend"))
    package var backend: VFIOBackendRequest = .auto

    package init() {}

    /// Opens `address` with the requested backend; `--backend iommufd` on a kernel without it
    /// fails naming the missing kernel option.
    package func open(_ address: PCIAddress, sysfsRoot: String, vfToken: VFToken? = nil) throws(VFIOError) -> VFIODevice {
        try openVFIODevice(address, backend: backend, sysfsRoot: sysfsRoot, vfToken: vfToken)
    }

    /// The backend `--backend` resolves to for `address` on this host (auto: what the host offers).
    package func resolve(_ address: PCIAddress, sysfsRoot: String) throws(VFIOError) -> VFIOBackend {
        try backend.resolve(address, sysfsRoot: sysfsRoot)
    }
}
