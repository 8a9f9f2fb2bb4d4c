import HostKernel
import PCIInventory
import VFIO

/// Which VFIO backend a hand-off describes (`vm config`'s settings, `cdi`'s device nodes): the
/// one rule both follow. iommufd needs /dev/iommu (CONFIG_IOMMUFD), a VFIO device file for every
/// device (CONFIG_VFIO_DEVICE_CDEV) and, where QEMU's form is printed and its version can be
/// read, QEMU 8.2; `auto` takes it where all of that holds, as the library's own `auto` does.
/// A mixed set (some devices with a device file, some without) is refused.
public enum HandOffBackend {
    /// The backend chosen, and why iommufd could not be (nil: it could).
    public struct Choice: Sendable, Equatable {
        /// The backend the hand-off uses.
        public let backend: VFIOBackend
        /// Why the iommufd form cannot be given for these devices on this host; nil when it can.
        public let iommufdUnavailable: String?
    }

    /// The first QEMU release with `-object iommufd` and vfio-pci's `iommufd=` (the version table's row).
    public static var qemuIOMMUFDVersion: KernelVersion {
        KernelHistory.versionFacts.first { $0.id == "qemu.iommufd" }?.version ?? KernelVersion(8, 2)
    }

    /// Chooses for `devices` on a host with /dev/iommu or not (`hasIOMMUFD`); `qemuVersion` is
    /// the host QEMU's version where it matters and can be read. Pure.
    public static func choose(_ request: VFIOBackendRequest, devices: [PCIDevice], hasIOMMUFD: Bool,
                              qemuVersion: String?) throws(VMMConfigRefusal) -> Choice {
        let unavailable = iommufdUnavailable(devices, hasIOMMUFD: hasIOMMUFD, qemuVersion: qemuVersion)
        switch request {
        case .type1:
            return Choice(backend: .type1, iommufdUnavailable: unavailable)
        case .iommufd:
            if let unavailable { throw VMMConfigRefusal(reason: "--backend iommufd: \(unavailable)", bindFirst: []) }
            return Choice(backend: .iommufd, iommufdUnavailable: nil)
        case .auto:
            // The VMM (or runtime) would need both backends at once, one of them for the wrong
            // reason: say so rather than pick.
            if let mixed = mixedDeviceFiles(devices) {
                throw VMMConfigRefusal(reason: "\(mixed); pass --backend type1 to hand every device over through its group", bindFirst: [])
            }
            return Choice(backend: unavailable == nil ? .iommufd : .type1, iommufdUnavailable: unavailable)
        }
    }

    /// Why these devices cannot be handed over through iommufd on this host, or nil.
    static func iommufdUnavailable(_ devices: [PCIDevice], hasIOMMUFD: Bool, qemuVersion: String?) -> String? {
        guard hasIOMMUFD else {
            return "this kernel has no /dev/iommu: it lacks CONFIG_IOMMUFD (and, for device files, CONFIG_VFIO_DEVICE_CDEV); use --backend type1, or a kernel built with both"
        }
        if let mixed = mixedDeviceFiles(devices) { return mixed }
        let without = devices.filter { $0.vfioDeviceFile == nil }
        if !without.isEmpty {
            return "\(without.map(\.address.description).joined(separator: ", ")) \(without.count == 1 ? "has" : "have") no VFIO device file (no vfio-dev/ in sysfs, so no /dev/vfio/devices/vfioN): the kernel lacks CONFIG_VFIO_DEVICE_CDEV; use --backend type1"
        }
        if let text = qemuVersion, let version = KernelVersion(release: text), version < qemuIOMMUFDVersion {
            return "the host's QEMU is \(text), and QEMU takes -object iommufd and vfio-pci iommufd= only from \(qemuIOMMUFDVersion.major).\(qemuIOMMUFDVersion.minor); use --backend type1, or a newer QEMU"
        }
        return nil
    }

    /// Names the devices of a set where some have a VFIO device file and some none; nil otherwise.
    static func mixedDeviceFiles(_ devices: [PCIDevice]) -> String? {
        let with = devices.filter { $0.vfioDeviceFile != nil }, without = devices.filter { $0.vfioDeviceFile == nil }
        guard !with.isEmpty, !without.isEmpty else { return nil }
        return "a mixed set: \(with.map { "\($0.address) (\($0.vfioDeviceFile ?? ""))" }.joined(separator: ", ")) \(with.count == 1 ? "has a" : "have a") VFIO device file, "
            + "\(without.map(\.address.description).joined(separator: ", ")) \(without.count == 1 ? "has" : "have") none (not bound to vfio-pci itself, or a driver without device files)"
    }
}
