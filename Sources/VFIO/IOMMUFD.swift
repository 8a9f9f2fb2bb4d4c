#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import PCIInventory
import SystemCalls
import SystemPackage
import TextFormat

/// An iommufd context (/dev/iommu) with one I/O address space (IOAS): the iommufd backend's
/// counterpart of `VFIOContainer`. Devices are opened through their VFIO device file
/// (/dev/vfio/devices/vfioN), bound to this iommufd and attached to the IOAS; DMA mappings made
/// here reach every attached device. RAM is mapped with IOMMU_IOAS_MAP; a peer's BAR is exported
/// by VFIO as a dma-buf and mapped with IOMMU_IOAS_MAP_FILE (IOMMU_IOAS_MAP of a BAR's PFNMAP
/// mapping fails with EFAULT). The descriptor is closed exactly once, in deinit, after every
/// mapping is gone; devices keep the address space alive.
public final class IOMMUFDAddressSpace {
    /// Where the iommufd node is.
    public static let defaultPath = "/dev/iommu"

    let owned: OwnedFileDescriptor
    var fd: FileDescriptor { owned.borrowed }
    /// The node this context was opened from.
    public let path: String
    /// The IOAS's object id in this iommufd.
    public let ioasID: UInt32
    /// IOVAs in use; made from the IOAS's ranges when the first mapping is made (after attach,
    /// when the devices' restrictions have narrowed them).
    var iovaAllocator: IOVAAllocator?
    /// Live DMA mappings by IOVA, each holding what backs it so the memory outlives the mapping.
    var activeMappings: [UInt64: ActiveDMA] = [:]

    /// Opens `path` and allocates an IOAS. A missing node is `.iommufdUnavailable` (CONFIG_IOMMUFD).
    public init(path: String = IOMMUFDAddressSpace.defaultPath) throws(VFIOError) {
        let owned: OwnedFileDescriptor
        do throws(VFIOError) {
            owned = try openCharacterDevice(path)
        } catch {
            if case .system(_, .noSuchFileOrDirectory) = error {
                throw .iommufdUnavailable(device: nil, missing: "CONFIG_IOMMUFD", detail: "\(path) does not exist")
            }
            throw error
        }
        // A failure below drops `owned`, which closes it (and frees any IOAS) once.
        var alloc = iommu_ioas_alloc()
        alloc.size = argsz(iommu_ioas_alloc.self)
        try ioctlStruct(owned.borrowed, CIOMMU_IOAS_ALLOC, &alloc, "IOMMU_IOAS_ALLOC on \(path)")
        self.owned = owned
        self.path = path
        self.ioasID = alloc.out_ioas_id
    }

    deinit {
        // Unmap every mapping while what backs it is still held; closing the descriptor after
        // this body frees the IOAS and unbinds nothing (devices hold this object).
        try? unmapAllDMA()
    }

    /// The iommufd's descriptor, borrowed: valid while this object lives; do not close it.
    public var rawDescriptor: Int32 { fd.rawValue }

    /// IOMMU_IOAS_IOVA_RANGES: the IOVA ranges the IOAS can map now (narrowed by every attached
    /// device's IOMMU), and the alignment every mapping must have.
    public func iovaRanges() throws(VFIOError) -> (ranges: [IOVARange], alignment: UInt64) {
        var query = iommu_ioas_iova_ranges()
        query.size = argsz(iommu_ioas_iova_ranges.self)
        query.ioas_id = ioasID
        let what = "IOMMU_IOAS_IOVA_RANGES on IOAS \(ioasID)"
        // First with no room: the kernel answers EMSGSIZE with the count it needs.
        do throws(VFIOError) {
            try ioctlStruct(fd, CIOMMU_IOAS_IOVA_RANGES, &query, what)
        } catch {
            guard case .system(_, .messageTooLong) = error else { throw error }
        }
        // A range list longer than this is not something an IOMMU reports; refuse it.
        guard query.num_iovas <= 4096 else { throw .unsupported("\(what): the kernel reports \(query.num_iovas) ranges") }
        var ranges = [iommu_iova_range](repeating: iommu_iova_range(), count: Int(query.num_iovas))
        if !ranges.isEmpty {
            try ranges.withUnsafeMutableBufferPointer { (buffer) throws(VFIOError) in
                // Safety: the kernel writes at most num_iovas entries into the array, which has
                // exactly that many and lives for the call.
                query.allowed_iovas = UInt64(UInt(bitPattern: buffer.baseAddress))
                try ioctlStruct(fd, CIOMMU_IOAS_IOVA_RANGES, &query, what)
            }
        }
        let count = min(Int(query.num_iovas), ranges.count)
        let result = ranges[0..<count].filter { $0.start <= $0.last }.map { IOVARange(start: $0.start, end: $0.last) }
        return (result, max(query.out_iova_alignment, 1))
    }

    /// IOMMU_IOAS_ALLOW_IOVAS: only these ranges may be used from now on, so a device attached
    /// later cannot narrow the IOAS below them (the kernel refuses such an attach instead).
    public func allowIOVAs(_ allowed: [IOVARange]) throws(VFIOError) {
        var ranges = allowed.map { range -> iommu_iova_range in
            var entry = iommu_iova_range()
            entry.start = range.start
            entry.last = range.end
            return entry
        }
        var request = iommu_ioas_allow_iovas()
        request.size = argsz(iommu_ioas_allow_iovas.self)
        request.ioas_id = ioasID
        request.num_iovas = UInt32(ranges.count)
        try ranges.withUnsafeMutableBufferPointer { (buffer) throws(VFIOError) in
            // Safety: the kernel reads num_iovas entries from the array, valid for the call.
            request.allowed_iovas = UInt64(UInt(bitPattern: buffer.baseAddress))
            try ioctlStruct(fd, CIOMMU_IOAS_ALLOW_IOVAS, &request, "IOMMU_IOAS_ALLOW_IOVAS on IOAS \(ioasID)")
        }
        iovaAllocator = nil
    }

    /// Opens `address` through its VFIO device file, binds it to this iommufd
    /// (VFIO_DEVICE_BIND_IOMMUFD, with `vfToken` for a VF whose PF has one) and attaches it to
    /// the IOAS (VFIO_DEVICE_ATTACH_IOMMUFD_PT). On any failure the device file is closed again.
    public func openDevice(_ address: PCIAddress, sysfsRoot: String, devVFIO: String,
                           vfToken: VFToken?) throws(VFIOError) -> VFIODevice {
        guard let name = try VFIODeviceFile.name(of: address, sysfsRoot: sysfsRoot) else {
            throw VFIOBackendFacts.missingDeviceFile(address, nonVFIODriver: VFIOBackendFacts.readNonVFIODriver(address, sysfsRoot: sysfsRoot))
        }
        let path = "\(devVFIO)/devices/\(name)"
        let device: OwnedFileDescriptor
        do throws(VFIOError) {
            device = try openCharacterDevice(path)
        } catch {
            if case .system(_, .resourceBusy) = error { throw .deviceBusy(device: address.description, path: path) }
            throw error
        }
        // From here a throw drops `device`, which closes it and so unbinds it.
        let deviceFD = device.borrowed
        var bind = vfio_device_bind_iommufd()
        bind.argsz = argsz(vfio_device_bind_iommufd.self)
        bind.iommufd = fd.rawValue
        var token = vfToken?.bytes ?? []
        do throws(VFIOError) {
            try token.withUnsafeMutableBufferPointer { (buffer) throws(VFIOError) in
                if vfToken != nil {
                    // Safety: the kernel reads the 16-byte UUID from the buffer during the call.
                    bind.flags = CVFIO_DEVICE_BIND_FLAG_TOKEN
                    bind.token_uuid_ptr = UInt64(UInt(bitPattern: buffer.baseAddress))
                }
                try ioctlStruct(deviceFD, CVFIO_DEVICE_BIND_IOMMUFD, &bind, "VFIO_DEVICE_BIND_IOMMUFD of \(path)")
            }
        } catch {
            if case .system(_, .resourceBusy) = error { throw .deviceBusy(device: address.description, path: path) }
            throw error
        }
        var attach = vfio_device_attach_iommufd_pt()
        attach.argsz = argsz(vfio_device_attach_iommufd_pt.self)
        attach.pt_id = ioasID
        try ioctlStruct(deviceFD, CVFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach, "VFIO_DEVICE_ATTACH_IOMMUFD_PT of \(path) to IOAS \(ioasID)")
        // The attach may have narrowed the IOVA ranges: the allocator is rebuilt on next use.
        if activeMappings.isEmpty { iovaAllocator = nil }
        return try VFIODevice(address: address, fd: device, binding: .iommufd(self, deviceID: bind.out_devid, path: path), sysfsRoot: sysfsRoot)
    }

    /// IOMMU_IOAS_MAP as given (fixed IOVA); the callers keep the books. EFAULT on device memory
    /// (a BAR's PFNMAP mapping) becomes `.pfnmapNotMappable`.
    func ioctlMap(address: UnsafeMutableRawPointer, size: UInt64, iova: UInt64, readable: Bool = true,
                  writable: Bool = true, isDeviceMemory: Bool) throws(VFIOError) {
        var map = iommu_ioas_map()
        map.size = argsz(iommu_ioas_map.self)
        map.flags = CIOMMU_IOAS_MAP_FIXED_IOVA | (readable ? CIOMMU_IOAS_MAP_READABLE : 0) | (writable ? CIOMMU_IOAS_MAP_WRITEABLE : 0)
        map.ioas_id = ioasID
        map.user_va = UInt64(UInt(bitPattern: address))
        map.length = size
        map.iova = iova
        do throws(VFIOError) {
            try ioctlStruct(fd, CIOMMU_IOAS_MAP, &map, "IOMMU_IOAS_MAP of \(size.hex()) bytes at IOVA \(iova.hex())")
        } catch {
            if isDeviceMemory, case .system(_, .badAddress) = error { throw .pfnmapNotMappable(size: size, iova: iova) }
            throw error
        }
    }

    /// IOMMU_IOAS_MAP_FILE of `length` bytes from `start` in the file `file` (a dma-buf) at `iova`.
    func ioctlMapFile(_ file: FileDescriptor, start: UInt64, size: UInt64, iova: UInt64) throws(VFIOError) {
        var map = iommu_ioas_map_file()
        map.size = argsz(iommu_ioas_map_file.self)
        map.flags = CIOMMU_IOAS_MAP_FIXED_IOVA | CIOMMU_IOAS_MAP_READABLE | CIOMMU_IOAS_MAP_WRITEABLE
        map.ioas_id = ioasID
        map.fd = file.rawValue
        map.start = start
        map.length = size
        map.iova = iova
        try ioctlStruct(fd, CIOMMU_IOAS_MAP_FILE, &map, "IOMMU_IOAS_MAP_FILE of a \(size.hex())-byte dma-buf at IOVA \(iova.hex())")
    }

    /// IOMMU_IOAS_UNMAP as given; returns how many bytes the kernel unmapped.
    @discardableResult
    func ioctlUnmap(iova: UInt64, size: UInt64) throws(VFIOError) -> UInt64 {
        var unmap = iommu_ioas_unmap()
        unmap.size = argsz(iommu_ioas_unmap.self)
        unmap.ioas_id = ioasID
        unmap.iova = iova
        unmap.length = size
        try ioctlStruct(fd, CIOMMU_IOAS_UNMAP, &unmap, "IOMMU_IOAS_UNMAP of \(size.hex()) bytes at IOVA \(iova.hex())")
        return unmap.length
    }
}

extension VFIODevice {
    /// VFIO_DEVICE_FEATURE(GET | DMA_BUF): a dma-buf of `length` bytes at `offset` in region
    /// `index` (one range), for iommufd to map a BAR for peer-to-peer (Linux 6.19 and later,
    /// CONFIG_VFIO_PCI_DMABUF). The returned descriptor is owned by the caller.
    public func exportDMABuf(region index: UInt32, offset: UInt64, length: UInt64) throws(VFIOError) -> OwnedFileDescriptor {
        let head = Int(CVFIO_DEVICE_FEATURE_DATA_OFFSET)
        let payload = Int(CVFIO_DEVICE_FEATURE_DMA_BUF_RANGES_OFFSET)
        var bytes = [UInt8](repeating: 0, count: head + payload + MemoryLayout<vfio_region_dma_range>.size)
        // struct vfio_device_feature { argsz, flags, data[] } whose data is struct
        // vfio_device_feature_dma_buf { region_index, open_flags, flags, nr_ranges, dma_ranges[] }
        // with one range: each part built as its uapi struct and copied to its offset.
        var feature = vfio_device_feature()
        feature.argsz = UInt32(bytes.count)
        feature.flags = CVFIO_DEVICE_FEATURE_GET | CVFIO_DEVICE_FEATURE_DMA_BUF
        var request = vfio_device_feature_dma_buf()
        request.region_index = index
        request.open_flags = UInt32(O_RDWR | O_CLOEXEC)
        request.nr_ranges = 1
        var range = vfio_region_dma_range()
        range.offset = offset
        range.length = length
        func place<T>(_ value: inout T, at offset: Int) {
            withUnsafeBytes(of: &value) { source in
                bytes.withUnsafeMutableBytes { target in
                    // Safety: the buffer holds every part at its offset (sized above).
                    UnsafeMutableRawBufferPointer(rebasing: target[offset..<(offset + source.count)]).copyMemory(from: source)
                }
            }
        }
        place(&feature, at: 0)
        place(&request, at: head)
        place(&range, at: head + payload)
        // Built only for an error: this runs on every peer map, where a string costs measurably.
        func what() -> String { "VFIO_DEVICE_FEATURE(GET|DMA_BUF) of region \(index) (\(length.hex()) bytes at \(offset.hex())) on \(address)" }
        let result: Int32
        do throws(VFIOError) {
            result = try ioctlBytes(fd, CVFIO_DEVICE_FEATURE, &bytes, what())
        } catch {
            if case .system(_, let code) = error, code == .notSupported || code == .invalidArgument || code == Errno(rawValue: ENODEV) {
                throw .unsupported("\(what()) failed: \(code); the kernel exports BARs as dma-bufs from Linux 6.19 with CONFIG_VFIO_PCI_DMABUF (it needs CONFIG_PCI_P2PDMA and CONFIG_DMA_SHARED_BUFFER), for a mappable memory BAR")
            }
            throw error
        }
        return OwnedFileDescriptor(rawValue: result)
    }
}
