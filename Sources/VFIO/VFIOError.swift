import SystemPackage
import TextFormat

/// Everything the VFIO layer can fail with. Each case says what was being done, so a message
/// printed as-is tells the user where it went wrong and, where it can, what to do about it.
public enum VFIOError: Error, Equatable, CustomStringConvertible {
    /// A system call failed: `operation` names it and its object, e.g. "open /dev/vfio/6".
    case system(operation: String, errno: Errno)
    /// The kernel's VFIO API version is not the one this code was written against.
    case unsupportedAPIVersion(found: Int32, expected: Int32)
    /// The container lacks the type1v2 IOMMU backend (no IOMMU, or vfio_iommu_type1 not loaded).
    case missingExtension(name: String)
    /// Some member of the group is bound to a host driver, so VFIO will not hand the group out.
    case groupNotViable(group: Int)
    /// The device has no IOMMU group: no IOMMU is enabled, or the address is wrong.
    case noIOMMUGroup(device: String, sysfsPath: String)
    /// /dev/vfio/N does not exist: no member of the group is bound to vfio-pci.
    case groupNotBound(group: Int, device: String?)
    /// The group is not attached to a container yet; devices can only be opened after that.
    case groupNotAttached(group: Int)
    /// A region index the device does not have.
    case noSuchRegion(index: UInt32, count: UInt32)
    /// A region that exists but is empty (an unimplemented BAR, say).
    case emptyRegion(index: UInt32)
    /// The region does not allow the requested access (read, write or mmap).
    case regionAccessDenied(index: UInt32, access: String)
    /// An access outside the region or the mapping.
    case outOfRange(offset: UInt64, width: Int, size: UInt64)
    /// An access that is not naturally aligned; device registers need aligned accesses.
    case misaligned(offset: UInt64, width: Int)
    /// An access width other than 1, 2, 4 or 8 bytes.
    case invalidWidth(Int)
    /// A read or write moved fewer bytes than asked.
    case shortTransfer(operation: String, expected: Int, actual: Int)
    /// The group is not viable; these members (address and driver) keep it from being so.
    case groupBlocked(group: Int, blockers: [String])
    /// The BAR is not a memory BAR the kernel placed (an I/O-port BAR, or unassigned).
    case notMemoryBAR(index: Int, reason: String)
    /// The bus address of a mapping is not known (no sysfs resource for it); `cause` is why,
    /// where reading the BAR's resource failed.
    indirect case physicalAddressUnknown(region: UInt32, cause: VFIOError? = nil)
    /// The device's memory decoding is off: an access would raise SIGBUS, so it is refused.
    case memoryDecodingDisabled(region: UInt32)
    /// The placement could not be computed (see BARPlacement).
    case placement(String)
    /// Pinning `requested` more bytes of RAM for DMA, with `locked` bytes locked already, would
    /// pass RLIMIT_MEMLOCK (`limit`), and the process lacks CAP_IPC_LOCK.
    case memlockExceeded(requested: UInt64, locked: UInt64, limit: UInt64)
    /// More DMA mappings requested than the container's dma_avail has left.
    case dmaAvailExhausted(requested: UInt64, available: UInt32)
    /// The IOVA space cannot take the mapping: exhausted (`.exhausted`), outside the IOMMU's
    /// ranges, overlapping another mapping, or a size or alignment the IOMMU page rules out.
    case iovaSpace(IOVAError)
    /// An IOVA this container has not mapped.
    case notMapped(iova: UInt64)
    /// A DMA buffer size that is not a positive multiple of the page size.
    case invalidDMABufferSize(bytes: Int, page: Int)
    /// A sysfs file that could not be read (the device went away, or the path is wrong).
    case unreadableSysfs(path: String)
    /// The group is attached to another container of this process: a group belongs to exactly one.
    case groupInAnotherContainer(group: Int)
    /// sysfs said something the kernel does not write (a crafted or broken tree).
    case malformedSysfs(path: String, reason: String)
    /// No eventfd signal arrived in time.
    case timedOut(String)
    /// The device offers no reset (VFIO_DEVICE_FLAGS_RESET clear: no FLR, PM or bus reset).
    case resetUnsupported(device: String)
    /// The device (or vfioctl) cannot do what was asked; the message says what it can do.
    case unsupported(String)
    /// Memory still in use (DMA-mapped, say) was asked to go; it stays until the use ends.
    case inUse(String)
    /// The iommufd backend cannot be used: the kernel lacks `missing` (a CONFIG_ option), as `detail` shows.
    case iommufdUnavailable(device: String?, missing: String, detail: String)
    /// The device is not bound to a VFIO driver (`driver` is its driver, or "none"), so it has
    /// no VFIO device file yet.
    case notBoundToVFIO(device: String, driver: String)
    /// The device file is busy (EBUSY): bound to another iommufd, or its group is open through
    /// the legacy /dev/vfio/N path, by this or another process.
    case deviceBusy(device: String, path: String)
    /// IOMMU_IOAS_MAP of a BAR's mapping (a VM_PFNMAP VMA) failed with EFAULT: iommufd pins
    /// pages, and a PFNMAP mapping has none; map the BAR as a dma-buf instead.
    case pfnmapNotMappable(size: UInt64, iova: UInt64)

    /// What failed, with what to do where known.
    public var description: String {
        switch self {
        case let .system(operation, errno):
            return "\(operation) failed: \(errno)\(Self.hint(for: errno, operation: operation))"
        case let .unsupportedAPIVersion(found, expected):
            return "the kernel's VFIO API version is \(found), this code needs \(expected)"
        case let .missingExtension(name):
            return "the VFIO container does not support \(name); is vfio_iommu_type1 loaded and an IOMMU enabled (intel_iommu=on / amd_iommu=on)?"
        case let .groupNotViable(group):
            return "IOMMU group \(group) is not viable: some member is bound to a host driver; bind every member to vfio-pci (or unbind it) first (see `vfioctl groups`)"
        case let .noIOMMUGroup(device, sysfsPath):
            return "\(device) has no IOMMU group (\(sysfsPath) is missing): is an IOMMU enabled, and is the address right?"
        case let .groupNotBound(group, device):
            let what = device.map { "bind \($0) to vfio-pci" } ?? "bind a member to vfio-pci"
            return "/dev/vfio/\(group) does not exist: no member of IOMMU group \(group) is bound to vfio-pci; \(what) first"
        case let .groupNotAttached(group):
            return "IOMMU group \(group) is not attached to a VFIO container; attach it before opening devices"
        case let .noSuchRegion(index, count):
            return "the device has no region \(index) (it has \(count): 0...\(count == 0 ? 0 : count - 1))"
        case let .emptyRegion(index):
            return "region \(index) is empty (the device does not implement it)"
        case let .regionAccessDenied(index, access):
            return "region \(index) does not allow \(access)"
        case let .outOfRange(offset, width, size):
            return "an access of \(width) bytes at offset \(offset.hex()) is outside the region of \(size.hex()) bytes"
        case let .misaligned(offset, width):
            return "offset \(offset.hex()) is not aligned to the access width of \(width) bytes"
        case let .invalidWidth(width):
            return "access width \(width) is not one of 1, 2, 4, 8"
        case let .shortTransfer(operation, expected, actual):
            return "\(operation) moved \(actual) of \(expected) bytes"
        case let .groupBlocked(group, blockers):
            return "IOMMU group \(group) is not viable: \(blockers.joined(separator: ", ")) \(blockers.count == 1 ? "is" : "are") bound to a host driver; bind \(blockers.count == 1 ? "it" : "them") to vfio-pci (or unbind) first"
        case let .notMemoryBAR(index, reason):
            return "BAR \(index) \(reason)"
        case let .physicalAddressUnknown(region, cause):
            return "the bus address of region \(region) is not known (no memory BAR for it in sysfs resource)" + (cause.map { ": \($0)" } ?? "")
        case let .memoryDecodingDisabled(region):
            return "memory decoding is off in the device's command register: region \(region) cannot be accessed (the kernel would raise SIGBUS); enable it first"
        case let .placement(message):
            return "placement: \(message)"
        case let .memlockExceeded(requested, locked, limit):
            return "pinning \(requested) bytes for DMA (with \(locked) already locked) exceeds RLIMIT_MEMLOCK of \(limit) bytes and the process lacks CAP_IPC_LOCK; raise the limit (ulimit -l, or LimitMEMLOCK= for a service) or grant CAP_IPC_LOCK"
        case let .dmaAvailExhausted(requested, available):
            return "\(requested) DMA mappings requested, but the container has only \(available) left (dma_avail; the vfio_iommu_type1 parameter dma_entry_limit sets it)"
        case let .iovaSpace(error):
            return error.description
        case let .notMapped(iova):
            return "IOVA 0x\(String(iova, radix: 16)) is not mapped by this container"
        case let .invalidDMABufferSize(bytes, page):
            return "DMA buffer size \(bytes) is not a positive multiple of \(page)"
        case let .unreadableSysfs(path):
            return "reading \(path) failed: it is missing or unreadable (is the device still there?)"
        case let .groupInAnotherContainer(group):
            return "IOMMU group \(group) is attached to another VFIO container already: a group belongs to one container; open its devices through that one (VFIOContainer.openDevice keeps one per group)"
        case let .malformedSysfs(path, reason):
            return "\(path): \(reason); the sysfs tree is not what the kernel provides"
        case let .unsupported(message), let .inUse(message):
            return message
        case let .timedOut(message):
            return message
        case let .iommufdUnavailable(device, missing, detail):
            return "\(device.map { "\($0): " } ?? "")the iommufd backend needs \(missing), which this kernel lacks (\(detail)); use --backend type1 (or auto, which falls back to it)"
        case let .notBoundToVFIO(device, driver):
            return "\(device) is not bound to vfio-pci (\(driver == "none" ? "no driver" : "driver \(driver)")), so it has no VFIO device file: bind \(device) to vfio-pci first (vfioctl bind \(device))"
        case let .deviceBusy(device, path):
            return "\(path) (\(device)) is busy (EBUSY): the device is bound to another iommufd, or its IOMMU group is open through the legacy /dev/vfio/N path (a VM or another vfioctl); close that user first"
        case let .pfnmapNotMappable(size, iova):
            return "IOMMU_IOAS_MAP of a \(size.hex())-byte BAR mapping at IOVA \(iova.hex()) failed with EFAULT: iommufd pins the pages it maps, and a BAR's mapping (a PFNMAP VMA) has none; map the BAR for peer-to-peer as a dma-buf instead (DMASpace.mapPeerBAR: VFIO_DEVICE_FEATURE_DMA_BUF, then IOMMU_IOAS_MAP_FILE; Linux 6.19+ with CONFIG_VFIO_PCI_DMABUF), or use --backend type1, which maps PFNMAP mappings"
        case let .resetUnsupported(device):
            return "\(device) has no reset method VFIO can use (no FLR, PM or bus reset; VFIO_DEVICE_FLAGS_RESET is clear)"
        }
    }

    private static func hint(for errno: Errno, operation: String) -> String {
        switch errno {
        case .permissionDenied, .notPermitted:
            return " (VFIO needs root, or the owner of the /dev/vfio node)"
        case .resourceBusy where operation.contains("/dev/vfio/"):
            return " (the group is already open, e.g. by a VM; VFIO allows one user at a time)"
        case .noSuchFileOrDirectory where operation.contains("/dev/vfio/vfio"):
            return " (is the vfio module loaded?)"
        case .badAddress where operation.hasPrefix("IOMMU_IOAS_MAP "):
            return " (iommufd pins the pages it maps: part of the range is not pinnable memory, such as a BAR's PFNMAP mapping; map a BAR for peer-to-peer as a dma-buf with DMASpace.mapPeerBAR, Linux 6.19+)"
        default:
            return ""
        }
    }
}
