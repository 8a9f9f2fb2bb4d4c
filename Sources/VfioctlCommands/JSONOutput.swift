import Foundation
import PCIInventory
import TextFormat

/// JSON output. Keys are snake_case (each report's CodingKeys or property names say so) and
/// sorted, and absent values are written as null rather than left out, so the schema documented
/// in the README is the same for every device. Every executable (vfioctl, vfioctl-lab-probe)
/// encodes through here: any Encodable becomes a JSONValue tree (JSONTreeEncoder, which holds
/// the null rule for report types of any module), rendered the way JSONValue documents.
package enum JSONOutput {
    package static func encode<T: Encodable>(_ value: T) throws -> String {
        try JSONTreeEncoder.tree(value).rendered()
    }
}

// Fixed-width lower-case hex, without Foundation's String(format:), which is slow enough to
// matter when thousands of devices are printed.
func hexID(_ value: UInt16?) -> String? {
    value.map(hex4)
}

func hexClass(_ value: UInt32?) -> String? {
    value.map(hex6)
}

extension JSONValue {
    static func bar(_ bar: PCIBAR) -> JSONValue {
        .object([
            ("index", .integer(bar.index)), ("start", .unsigned(bar.start)), ("end", .unsigned(bar.end)),
            ("size", .unsigned(bar.size)), ("kind", .string(bar.kind.rawValue)), ("is64", .bool(bar.is64Bit)),
            ("prefetchable", .bool(bar.prefetchable)), ("unassigned", .bool(bar.unassigned)),
        ])
    }

    /// One device in `list --json`.
    static func deviceSummary(_ device: PCIDevice) -> JSONValue {
        .object(summaryPairs(device))
    }

    static func summaryPairs(_ device: PCIDevice) -> [(String, JSONValue)] {
        [
            ("address", .string(device.address.description)),
            ("vendor_id", .optional(hexID(device.vendorID))),
            ("device_id", .optional(hexID(device.deviceID))),
            ("subsystem_vendor_id", .optional(hexID(device.subsystemVendorID))),
            ("subsystem_device_id", .optional(hexID(device.subsystemDeviceID))),
            ("class", .optional(hexClass(device.classCode))),
            ("revision", .optional(device.revision.map(hex2))),
            ("vendor_name", .optional(device.names.vendor)),
            ("device_name", .optional(device.names.device)),
            ("class_name", .optional(device.names.className)),
            ("driver", .optional(device.driver)),
            ("iommu_group", .optional(device.iommuGroup)),
            ("vfio_device_file", .optional(device.vfioDeviceFile)),
            ("bars", .array(device.bars.map(JSONValue.bar))),
            ("problems", .array(device.problems.map(JSONValue.string))),
            ("numa_node", .optional(device.numaNode)),
            ("local_cpus", .optional(device.localCPUs)),
            ("pcie_root_port", .optional(device.rootPort?.description)),
            ("pcie_root", .optional(device.rootComplex)),
            ("dra_attributes", draAttributes(device)),
        ]
    }

    /// The standard attributes Kubernetes DRA drivers publish for a PCI device in a ResourceSlice,
    /// under their qualified names: pciBusID (extended BDF), pcieRoot (the root complex,
    /// "pci<domain>:<bus>") and numaNode (the kernel's numa_node; null where it reports none);
    /// and vfioctl's own vfioDeviceFile (vfioN under /dev/vfio/devices; null where none), which
    /// an iommufd consumer needs besides the group.
    static func draAttributes(_ device: PCIDevice) -> JSONValue {
        .object([
            ("resource.kubernetes.io/numaNode", .optional(device.numaNode)),
            ("resource.kubernetes.io/pciBusID", .string(device.address.description)),
            ("resource.kubernetes.io/pcieRoot", .optional(device.rootComplex)),
            ("vfioctl/vfioDeviceFile", .optional(device.vfioDeviceFile)),
        ])
    }

    static func blocker(_ blocker: GroupBlocker) -> JSONValue {
        .object([("address", .string(blocker.address)), ("driver", .optional(blocker.driver)),
                 ("reason", .string(blocker.reason))])
    }

    static func acs(_ status: ACSStatus?) -> JSONValue {
        guard let status else { return .null }
        return .object([("supported", .array(status.supported.names.map(JSONValue.string))),
                        ("enabled", .array(status.enabled.names.map(JSONValue.string))),
                        ("isolates", .bool(status.isolates))])
    }

    /// `show --json`: every `list` key, and the rest of what vfioctl knows about the device.
    static func deviceDetail(_ device: PCIDevice, in inventory: PCIInventory) -> JSONValue {
        let group = device.iommuGroup.flatMap(inventory.group)
        let bridges: [JSONValue] = device.parentBridges.map { address in
            let bridge = inventory.device(address)
            return .object([("address", .string(address.description)), ("driver", .optional(bridge?.driver)),
                            ("port_type", .optional(bridge?.expressPortType?.name)),
                            ("acs", acs(bridge?.accessControlServices))])
        }
        let sriov: JSONValue = device.sriov.map { sriov in
            .object([("total_vfs", .optional(sriov.totalVFs)), ("num_vfs", .optional(sriov.enabledVFs)),
                     ("virtfns", .array(sriov.virtualFunctions.map { .string($0.description) })),
                     ("vfs", .array(sriov.virtualFunctions.map { vf in
                         .object([("address", .string(vf.description)), ("iommu_group", .optional(inventory.device(vf)?.iommuGroup)),
                                  ("driver", .optional(inventory.device(vf)?.driver))])
                     }))])
        } ?? .null
        return .object(summaryPairs(device) + [
            ("subsystem_vendor_name", .optional(device.names.subsystemVendor)),
            ("subsystem_name", .optional(device.names.subsystem)),
            ("prog_if_name", .optional(device.names.programmingInterface)),
            ("driver_override", .optional(device.driverOverride)),
            ("group_viable", .optional(group?.isViable)),
            ("group_siblings", .array((group?.devices ?? []).filter { $0 != device.address }.map { .string($0.description) })),
            ("group_blockers", .array((group?.blockers ?? []).map(blocker))),
            ("rom", device.rom.map(bar) ?? .null),
            ("resizable_bars", .array(device.resizableBARs.map(resizableBAR))),
            ("reset_methods", .array(device.resetMethods.map(JSONValue.string))),
            ("boot_vga", .optional(device.bootVGA)),
            ("pcie_port_type", .optional(device.expressPortType?.name)),
            ("acs", acs(device.accessControlServices)),
            ("parent_bridges", .array(bridges)),
            ("sriov", sriov),
            ("physfn", .optional(device.physicalFunction?.description)),
        ])
    }

    /// One resizable BAR in `show --json`: sizes in bytes; `kernel_sizes` null without `resourceN_resize`.
    static func resizableBAR(_ entry: ResizableBAR) -> JSONValue {
        .object([
            ("index", .integer(entry.index)),
            ("current_size", entry.currentSize.map(JSONValue.unsigned) ?? .null),
            ("supported_sizes", .array(entry.supportedSizes.map(JSONValue.unsigned))),
            ("kernel_sizes", entry.kernelSizes.map { .array($0.map(JSONValue.unsigned)) } ?? .null),
        ])
    }

    /// One group in `groups --json`.
    static func group(_ group: IOMMUGroup) -> JSONValue {
        .object([
            ("group", .integer(group.id)),
            ("viable", .bool(group.isViable)),
            ("devices", .array(group.devices.map { .string($0.description) })),
            ("other_members", .array(group.otherMembers.map(JSONValue.string))),
            ("blockers", .array(group.blockers.map(blocker))),
        ])
    }
}
