import Foundation
import PCIInventory

/// JSON output. Keys are snake_case and sorted, absent values are written as null rather than
/// left out, so the schema documented in the README is the same for every device.
enum JSONOutput {
    static func encode<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(value)
        return String(decoding: data, as: UTF8.self)
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

/// A BAR in `list`, `show` and `groups` JSON.
struct BARJSON: Encodable {
    let bar: PCIBAR
    enum Keys: String, CodingKey { case index, start, end, size, kind, is64, prefetchable, unassigned }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(bar.index, forKey: .index)
        try container.encode(bar.start, forKey: .start)
        try container.encode(bar.end, forKey: .end)
        try container.encode(bar.size, forKey: .size)
        try container.encode(bar.kind.rawValue, forKey: .kind)
        try container.encode(bar.is64Bit, forKey: .is64)
        try container.encode(bar.prefetchable, forKey: .prefetchable)
        try container.encode(bar.unassigned, forKey: .unassigned)
    }
}

extension JSONValue {
    static func bar(_ bar: PCIBAR) -> JSONValue {
        .object([
            ("index", .integer(bar.index)), ("start", .unsigned(bar.start)), ("end", .unsigned(bar.end)),
            ("size", .unsigned(bar.size)), ("kind", .string(bar.kind.rawValue)), ("is64", .bool(bar.is64Bit)),
            ("prefetchable", .bool(bar.prefetchable)), ("unassigned", .bool(bar.unassigned)),
        ])
    }

    /// One device in `list --json` (the same keys as `DeviceSummaryJSON`).
    static func deviceSummary(_ device: PCIDevice) -> JSONValue {
        .object([
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
            ("bars", .array(device.bars.map(JSONValue.bar))),
            ("problems", .array(device.problems.map(JSONValue.string))),
        ])
    }

    /// One group in `groups --json`.
    static func group(_ group: IOMMUGroup) -> JSONValue {
        .object([
            ("group", .integer(group.id)),
            ("viable", .bool(group.isViable)),
            ("devices", .array(group.devices.map { .string($0.description) })),
            ("other_members", .array(group.otherMembers.map(JSONValue.string))),
            ("blockers", .array(group.blockers.map { blocker in
                .object([("address", .string(blocker.address)), ("driver", .optional(blocker.driver)),
                         ("reason", .string(blocker.reason))])
            })),
        ])
    }
}

/// One device in `list --json`.
struct DeviceSummaryJSON: Encodable {
    let device: PCIDevice
    enum Keys: String, CodingKey {
        case address, vendor_id, device_id, subsystem_vendor_id, subsystem_device_id, `class`, revision
        case vendor_name, device_name, class_name, driver, iommu_group, bars, problems
    }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(device.address.description, forKey: .address)
        try container.encode(hexID(device.vendorID), forKey: .vendor_id)
        try container.encode(hexID(device.deviceID), forKey: .device_id)
        try container.encode(hexID(device.subsystemVendorID), forKey: .subsystem_vendor_id)
        try container.encode(hexID(device.subsystemDeviceID), forKey: .subsystem_device_id)
        try container.encode(hexClass(device.classCode), forKey: .class)
        try container.encode(device.revision.map(hex2), forKey: .revision)
        try container.encode(device.names.vendor, forKey: .vendor_name)
        try container.encode(device.names.device, forKey: .device_name)
        try container.encode(device.names.className, forKey: .class_name)
        try container.encode(device.driver, forKey: .driver)
        try container.encode(device.iommuGroup, forKey: .iommu_group)
        try container.encode(device.bars.map(BARJSON.init), forKey: .bars)
        try container.encode(device.problems, forKey: .problems)
    }
}

struct BlockerJSON: Encodable {
    let blocker: GroupBlocker
    enum Keys: String, CodingKey { case address, driver, reason }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(blocker.address, forKey: .address)
        try container.encode(blocker.driver, forKey: .driver)
        try container.encode(blocker.reason, forKey: .reason)
    }
}

/// One group in `groups --json`.
struct GroupJSON: Encodable {
    let group: IOMMUGroup
    enum Keys: String, CodingKey { case group, viable, devices, other_members, blockers }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(group.id, forKey: .group)
        try container.encode(group.isViable, forKey: .viable)
        try container.encode(group.devices.map(\.description), forKey: .devices)
        try container.encode(group.otherMembers, forKey: .other_members)
        try container.encode(group.blockers.map(BlockerJSON.init), forKey: .blockers)
    }
}

struct ACSJSON: Encodable {
    let status: ACSStatus
    enum Keys: String, CodingKey { case supported, enabled, isolates }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(status.supported.names, forKey: .supported)
        try container.encode(status.enabled.names, forKey: .enabled)
        try container.encode(status.isolates, forKey: .isolates)
    }
}

/// A bridge above the device in `show --json`.
struct BridgeJSON: Encodable {
    let address: PCIAddress
    let bridge: PCIDevice?
    enum Keys: String, CodingKey { case address, driver, port_type, acs }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(address.description, forKey: .address)
        try container.encode(bridge?.driver, forKey: .driver)
        try container.encode(bridge?.expressPortType?.name, forKey: .port_type)
        try container.encode(bridge?.accessControlServices.map(ACSJSON.init), forKey: .acs)
    }
}

/// `show --json`: everything about one device, its group and the bridges above it.
struct DeviceDetailJSON: Encodable {
    let device: PCIDevice
    let inventory: PCIInventory
    enum Keys: String, CodingKey {
        case address, vendor_id, device_id, subsystem_vendor_id, subsystem_device_id, `class`, revision
        case vendor_name, device_name, subsystem_vendor_name, subsystem_name, class_name, prog_if_name
        case driver, driver_override, iommu_group, group_viable, group_siblings, group_blockers
        case bars, rom, reset_methods, boot_vga, numa_node, pcie_port_type, acs, parent_bridges
        case sriov, physfn, problems
    }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(device.address.description, forKey: .address)
        try container.encode(hexID(device.vendorID), forKey: .vendor_id)
        try container.encode(hexID(device.deviceID), forKey: .device_id)
        try container.encode(hexID(device.subsystemVendorID), forKey: .subsystem_vendor_id)
        try container.encode(hexID(device.subsystemDeviceID), forKey: .subsystem_device_id)
        try container.encode(hexClass(device.classCode), forKey: .class)
        try container.encode(device.revision.map(hex2), forKey: .revision)
        try container.encode(device.names.vendor, forKey: .vendor_name)
        try container.encode(device.names.device, forKey: .device_name)
        try container.encode(device.names.subsystemVendor, forKey: .subsystem_vendor_name)
        try container.encode(device.names.subsystem, forKey: .subsystem_name)
        try container.encode(device.names.className, forKey: .class_name)
        try container.encode(device.names.programmingInterface, forKey: .prog_if_name)
        try container.encode(device.driver, forKey: .driver)
        try container.encode(device.driverOverride, forKey: .driver_override)
        try container.encode(device.iommuGroup, forKey: .iommu_group)
        let group = device.iommuGroup.flatMap(inventory.group)
        try container.encode(group?.isViable, forKey: .group_viable)
        try container.encode(group.map { $0.devices.filter { $0 != device.address }.map(\.description) } ?? [],
                             forKey: .group_siblings)
        try container.encode(group?.blockers.map(BlockerJSON.init) ?? [], forKey: .group_blockers)
        try container.encode(device.bars.map(BARJSON.init), forKey: .bars)
        try container.encode(device.rom.map(BARJSON.init), forKey: .rom)
        try container.encode(device.resetMethods, forKey: .reset_methods)
        try container.encode(device.bootVGA, forKey: .boot_vga)
        try container.encode(device.numaNode, forKey: .numa_node)
        try container.encode(device.expressPortType?.name, forKey: .pcie_port_type)
        try container.encode(device.accessControlServices.map(ACSJSON.init), forKey: .acs)
        try container.encode(device.parentBridges.map { BridgeJSON(address: $0, bridge: inventory.device($0)) },
                             forKey: .parent_bridges)
        try container.encode(device.sriov.map(SRIOVJSON.init), forKey: .sriov)
        try container.encode(device.physicalFunction?.description, forKey: .physfn)
        try container.encode(device.problems, forKey: .problems)
    }
}

struct SRIOVJSON: Encodable {
    let sriov: SRIOVPhysicalFunction
    enum Keys: String, CodingKey { case total_vfs, num_vfs, virtfns }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(sriov.totalVFs, forKey: .total_vfs)
        try container.encode(sriov.enabledVFs, forKey: .num_vfs)
        try container.encode(sriov.virtualFunctions.map(\.description), forKey: .virtfns)
    }
}
