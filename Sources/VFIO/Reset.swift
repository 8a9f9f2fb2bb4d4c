#if canImport(Glibc)
import Glibc
#endif
import CLinuxUAPI
import PCIInventory
import SystemPackage

/// How `vfioctl reset` resets a device: one of the kernel's function reset methods (the names
/// of sysfs `reset_method`), done by VFIO_DEVICE_RESET with `reset_method` narrowed to it, or a
/// hot reset of the device's slot or bus through VFIO_DEVICE_PCI_HOT_RESET, which resets every
/// device there (its affected set).
public enum ResetMethod: String, CaseIterable, Sendable {
    case flr
    case afFLR = "af_flr"
    case pm
    case bus
    case acpi
    case deviceSpecific = "device_specific"
    case cxlBus = "cxl_bus"
    case hot

    /// Chooses the method, before anything is opened. Pure. Without a request it is the first
    /// of the device's `reset_method` list, the kernel's own order. A requested function method
    /// must be one the device offers.
    public static func choose(requested: ResetMethod?, offered: [String], address: PCIAddress) throws(VFIOError) -> ResetMethod {
        if requested == .hot { return .hot }
        let known = offered.compactMap(ResetMethod.init(rawValue:)).filter { $0 != .hot }
        if let requested {
            guard known.contains(requested) else {
                throw .unsupported("\(address) offers no \(requested.rawValue) reset (its reset_method: \(offered.isEmpty ? "none" : offered.joined(separator: " "))); choose one of those, or --method hot for a bus or slot reset of everything there")
            }
            return requested
        }
        guard let first = known.first else {
            throw .unsupported("\(address) has no reset method of its own (empty reset_method); --method hot resets its slot or bus, with every device there")
        }
        return first
    }
}

/// A device a hot reset also resets, and its IOMMU group.
public struct AffectedDevice: Sendable, Equatable {
    /// The device's address.
    public let address: PCIAddress
    /// Its IOMMU group number.
    public let group: Int

    /// A device at `address` in IOMMU group `group`.
    public init(address: PCIAddress, group: Int) {
        self.address = address
        self.group = group
    }
}

extension VFIODevice {
    /// VFIO_DEVICE_RESET with sysfs `reset_method` narrowed to `method` for the call, so the
    /// kernel uses that method and no other; the device's list is written back afterwards.
    public func reset(method: ResetMethod, sysfsRoot: String) throws(VFIOError) {
        let path = "\(sysfsRoot)/bus/pci/devices/\(address)/reset_method"
        let original = SysfsReader().readString(path) ?? ""
        try writeAttribute(path, method.rawValue)
        defer { if !original.isEmpty { try? writeAttribute(path, original) } }
        try ioctlValue(fd, CVFIO_DEVICE_RESET, 0, "VFIO_DEVICE_RESET (\(method.rawValue)) on \(address)")
    }

    /// VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: every device a hot reset of this one's slot or bus
    /// would reset, this one included.
    public func hotResetAffected() throws(VFIOError) -> [AffectedDevice] {
        // A bus holds at most 256 functions: one buffer always fits the answer.
        let layout = try flexibleLayout(vfio_pci_hot_reset_info.self, vfio_pci_dependent_device.self,
                                        arrayOffset: Int(CVFIO_PCI_HOT_RESET_INFO_DEVICES_OFFSET), count: 256)
        let buffer = try ioctlBuffer(fd, CVFIO_DEVICE_GET_PCI_HOT_RESET_INFO, template: vfio_pci_hot_reset_info(), argsz: \.argsz,
                                     size: layout.byteCount, "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO on \(address)")
        guard let count = buffer.load(\vfio_pci_hot_reset_info.count, ofStructAt: 0), count <= 256 else {
            throw .unsupported("the kernel's hot reset info for \(address) is malformed")
        }
        // Opened through its device file, the kernel answers with iommufd device ids instead of
        // group numbers (VFIO_PCI_HOT_RESET_FLAG_DEV_ID): the groups then come from sysfs.
        let flags = buffer.load(\vfio_pci_hot_reset_info.flags, ofStructAt: 0) ?? 0
        let byDeviceID = flags & UInt32(VFIO_PCI_HOT_RESET_FLAG_DEV_ID) != 0
        var affected: [AffectedDevice] = []
        for index in 0..<Int(count) {
            // Read field by field: the entry's group_id/devid union keeps Swift from copying it whole.
            let entry = layout.offset(ofElement: index)
            guard let segment = buffer.load(\vfio_pci_dependent_device.segment, ofStructAt: entry),
                  let bus = buffer.load(\vfio_pci_dependent_device.bus, ofStructAt: entry),
                  let devfn = buffer.load(\vfio_pci_dependent_device.devfn, ofStructAt: entry),
                  let groupID = buffer.load(UInt32.self, at: entry + Int(CVFIO_PCI_DEPENDENT_DEVICE_ID_OFFSET)),
                  let address = try? PCIAddress(domain: UInt32(segment), bus: bus,
                                                device: devfn >> 3, function: devfn & 7) else {
                throw .unsupported("the kernel's hot reset info for \(address) is malformed")
            }
            let group = byDeviceID ? try VFIOGroup.groupNumber(of: address, sysfsRoot: sysfsRoot) : Int(groupID)
            affected.append(AffectedDevice(address: address, group: group))
        }
        return affected
    }

    /// VFIO_DEVICE_PCI_HOT_RESET, proving ownership of every affected group with its open fd
    /// (type1); on iommufd `groups` is empty and the kernel checks that every affected device is
    /// bound to this device's iommufd. The kernel refuses (EBUSY) while another user has any
    /// affected device open.
    public func hotReset(groups: [VFIOGroup]) throws(VFIOError) {
        var buffer = try flexibleArray(header: vfio_pci_hot_reset(), elements: groups.map(\.fd.rawValue),
                                       arrayOffset: Int(CVFIO_PCI_HOT_RESET_GROUP_FDS_OFFSET), argsz: \.argsz, countField: \.count)
        // Safety: the kernel reads argsz (= the buffer's size) bytes.
        try ioctlBytes(fd, CVFIO_DEVICE_PCI_HOT_RESET, &buffer.bytes, "VFIO_DEVICE_PCI_HOT_RESET on \(address) with groups \(groups.map(\.number))")
    }

    /// The vendor ID config space returns now: after a reset, a device that answers gives its
    /// own; all ones means it did not come back.
    public func vendorAfterReset() throws(VFIOError) -> UInt16 {
        UInt16(truncatingIfNeeded: try readConfig(0, width: .word))
    }
}

/// Writes a sysfs attribute of the device (reset_method).
func writeAttribute(_ path: String, _ value: String) throws(VFIOError) {
    try withErrno("writing \"\(value)\" to \(path)") {
        let descriptor = try FileDescriptor.open(path, .writeOnly, options: [.closeOnExec])
        try descriptor.closeAfter { _ = try descriptor.writeAll(Array(value.utf8)) }
    }
}
