import PCIInventory
import TextFormat
import VFIO

/// A CDI kind, "vendor/class": the vendor a DNS subdomain, the class 1-63 characters that begin
/// and end alphanumeric with `-_.` between (the CDI specification's rules).
public struct CDIKind: Sendable, Equatable, CustomStringConvertible {
    /// The DNS subdomain part, e.g. "vfioctl" or "example.com".
    public let vendor: String
    /// The class part, e.g. "pci".
    public let deviceClass: String

    /// vfioctl's own kind, "vfioctl/pci".
    public static let vfioctl = CDIKind(vendor: "vfioctl", deviceClass: "pci")

    init(vendor: String, deviceClass: String) {
        self.vendor = vendor
        self.deviceClass = deviceClass
    }

    /// Parses "vendor/class"; nil when either part breaks the specification's rules.
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, Self.isName(parts[1]), parts[0].count <= 253,
              !parts[0].isEmpty, parts[0].split(separator: ".", omittingEmptySubsequences: false).allSatisfy(Self.isLabel) else { return nil }
        self.init(vendor: String(parts[0]), deviceClass: String(parts[1]))
    }

    static func isAlphanumeric(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c.isNumber) }

    /// A CDI name: alphanumerics at both ends, `-`, `_`, `.` allowed between, at most 63 characters.
    static func isName(_ text: some StringProtocol) -> Bool {
        guard let first = text.first, let last = text.last, text.count <= 63 else { return false }
        return isAlphanumeric(first) && isAlphanumeric(last) && text.allSatisfy { isAlphanumeric($0) || "-_.".contains($0) }
    }

    /// A DNS label: lower-case alphanumerics at both ends, dashes between, at most 63 characters.
    static func isLabel(_ text: some StringProtocol) -> Bool {
        guard let first = text.first, let last = text.last, text.count <= 63 else { return false }
        let allowed: (Character) -> Bool = { ($0.isASCII && ($0.isLowercase || $0.isNumber)) }
        return allowed(first) && allowed(last) && text.allSatisfy { allowed($0) || $0 == "-" }
    }

    /// "vendor/class".
    public var description: String { vendor + "/" + deviceClass }
}

/// A Container Device Interface spec for the devices bound to a VFIO driver in viable groups,
/// built from the inventory alone (pure: nothing is read or written here). With type1 each
/// device gets its group's node (/dev/vfio/N) and the spec /dev/vfio/vfio; with iommufd each
/// device gets its own file (/dev/vfio/devices/vfioN) and the spec /dev/iommu. The backend is
/// chosen by `HandOffBackend`, as for `vm config`.
public struct CDISpec: Sendable {
    /// 0.6.0 added annotations, which carry each device's address and group.
    public static let version = "0.6.0"

    /// One CDI device: one PCI function.
    public struct Device: Sendable, Equatable {
        /// The CDI name: the address with dashes for colons (CDI names may not hold ':').
        public let name: String
        /// The PCI address.
        public let address: PCIAddress
        /// Its IOMMU group.
        public let group: Int
        /// "vendor:device" in hex ("????" where sysfs did not say).
        public let vendorDevice: String
        /// Its VFIO device file name (vfioN), where the kernel made one.
        public let deviceFile: String?
        /// The nodes a container needs for this device with the spec's backend.
        public let deviceNodes: [String]
    }

    /// The spec's kind.
    public let kind: CDIKind
    /// The backend the device nodes are for.
    public let backend: VFIOBackend
    /// The devices, in address order.
    public let devices: [Device]
    /// Devices on a VFIO driver that were left out, and why.
    public let skipped: [String]

    /// The nodes every device of the spec needs besides its own.
    public var commonDeviceNodes: [String] {
        backend == .iommufd ? ["/dev/iommu"] : ["/dev/vfio/vfio"]
    }

    /// Every node the spec names, once each.
    public var allDeviceNodes: [String] {
        var seen: Set<String> = []
        return (devices.flatMap(\.deviceNodes) + commonDeviceNodes).filter { seen.insert($0).inserted }
    }

    /// The spec for `inventory`'s VFIO devices; `hasIOMMUFD` says whether /dev/iommu exists.
    /// `--backend iommufd` where it cannot be used, and a mixed set under `auto`, are refused.
    public init(inventory: PCIInventory, kind: CDIKind, backend request: VFIOBackendRequest, hasIOMMUFD: Bool) throws(VMMConfigRefusal) {
        var selected: [(device: PCIDevice, group: Int)] = []
        var skipped: [String] = []
        for device in inventory.devices {
            guard let driver = device.driver, GroupViability.isVFIODriver(driver) else { continue }
            guard let group = device.iommuGroup, let info = inventory.group(group) else {
                skipped.append("\(device.address) is on \(driver) but has no IOMMU group; left out")
                continue
            }
            guard info.isViable else {
                skipped.append("\(device.address): IOMMU group \(group) is not viable (\(info.blockers.map(\.address).joined(separator: ", ")) on host drivers); left out")
                continue
            }
            selected.append((device, group))
        }
        let backend = selected.isEmpty ? .type1
            : try HandOffBackend.choose(request, devices: selected.map(\.device), hasIOMMUFD: hasIOMMUFD, qemuVersion: nil).backend
        self.kind = kind
        self.backend = backend
        self.skipped = skipped
        self.devices = selected.map { device, group in
            let file = device.vfioDeviceFile
            let nodes = backend == .iommufd ? file.map { ["\(VFIODeviceFile.devicesDirectory)/\($0)"] } ?? [] : ["/dev/vfio/\(group)"]
            return Device(name: String(device.address.description.map { $0 == ":" ? "-" : $0 }), address: device.address, group: group,
                          vendorDevice: (device.vendorID.map(hex4) ?? "????") + ":" + (device.deviceID.map(hex4) ?? "????"),
                          deviceFile: file, deviceNodes: nodes)
        }
    }
}
