/// What a Linux or QEMU release gives passthrough, one row per fact with its source: the table
/// `doctor` judges the host's kernel and QEMU by. Pure data.
public struct PassthroughVersionFact: Sendable, Equatable {
    /// Which program the version is of.
    public enum Component: String, Sendable { case linux = "Linux", qemu = "QEMU" }

    /// A stable identifier, e.g. "linux.vfio-huge-fault".
    public let id: String
    /// Linux or QEMU.
    public let component: Component
    /// The first release with it.
    public let version: KernelVersion
    /// What it gives.
    public let gives: String
    /// What a host without it pays.
    public let withoutIt: String
    /// The commit or release it comes from.
    public let source: String
}

extension KernelHistory {
    /// The table: Linux and QEMU releases and what each gives passthrough.
    public static let versionFacts: [PassthroughVersionFact] = [
        PassthroughVersionFact(id: "linux.vfio-huge-fault", component: .linux, version: KernelVersion(6, 12),
                               gives: "vfio-pci maps BARs with PMD/PUD entries on demand (huge_fault)",
                               withoutIt: "every BAR page is a 4 KiB page-table entry",
                               source: "f9e54c3a2f5b \"vfio/pci: implement huge_fault support\", v6.12"),
        PassthroughVersionFact(id: "linux.type1-pfnmap-levels", component: .linux, version: KernelVersion(6, 15),
                               gives: "type1 maps PFNMAP (BAR) ranges for DMA one page-table level at a time",
                               withoutIt: "DMA-mapping a BAR (peer-to-peer) walks it 4 KiB at a time",
                               source: "0fd06844de5d \"vfio/type1: Use mapping page mask for pfnmaps\", v6.15"),
        PassthroughVersionFact(id: "linux.dmabuf-p2p", component: .linux, version: KernelVersion(6, 19),
                               gives: "vfio-pci exports BARs as dma-bufs for peer-to-peer",
                               withoutIt: "no dma-buf export of BARs (peer-to-peer only through type1 mappings)",
                               source: "vfio/pci dma-buf support (VFIO_DEVICE_FEATURE_DMA_BUF), v6.19"),
        PassthroughVersionFact(id: "qemu.iommufd", component: .qemu, version: KernelVersion(8, 2),
                               gives: "QEMU opens devices through iommufd (-object iommufd)",
                               withoutIt: "only the type1 container backend",
                               source: "QEMU 8.2 release (vfio iommufd backend)"),
        PassthroughVersionFact(id: "qemu.bar-mmap-alignment", component: .qemu, version: KernelVersion(9, 2),
                               gives: "QEMU aligns BAR mmaps so the kernel can fault them in huge",
                               withoutIt: "BARs are mapped misaligned and fault in 4 KiB at a time",
                               source: "QEMU 9.2 release (vfio_region_mmap aligns to the region size)"),
    ]

    /// The facts `version` of `component` lacks, in table order.
    public static func missing(_ component: PassthroughVersionFact.Component, _ version: KernelVersion) -> [PassthroughVersionFact] {
        versionFacts.filter { $0.component == component && version < $0.version }
    }
}
