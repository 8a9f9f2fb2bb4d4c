import ArgumentParser
import Foundation
import PCIInventory

/// `vfioctl cdi`: a Container Device Interface spec for the devices bound to vfio-pci, so that
/// container runtimes (and KubeVirt's launcher pods) can be handed /dev/vfio nodes by name.
struct CDICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cdi",
        abstract: "Write a CDI spec (Container Device Interface) naming every vfio-pci device with its /dev/vfio nodes.",
        discussion: """
            One CDI device per PCI function on a VFIO driver whose IOMMU group is viable, named \
            after its address with dashes for colons (0000-01-00.0), with /dev/vfio/<group>; \
            /dev/vfio/vfio is added for any of them. Write it where runtimes look \
            (/etc/cdi or /var/run/cdi), then request KIND=NAME, e.g. \
            `podman run --device vfioctl/pci=0000-01-00.0`.

            Examples:
              vfioctl cdi
              vfioctl cdi --kind example.com/gpu --output /etc/cdi/vfioctl.json
            """
    )
    @OptionGroup var global: GlobalOptions
    @Option(name: .long, help: ArgumentHelp("The spec's kind, VENDOR/CLASS.", valueName: "kind"))
    var kind: CDIKind = CDIKind(vendor: "vfioctl", deviceClass: "pci")
    @Option(name: .long, help: ArgumentHelp("Write the spec to this file (a new file, or a regular file replaced atomically; - for stdout).", valueName: "path"))
    var output: String?

    func run() throws {
        let inventory = try InventoryLoader.load(global, detail: .summary)
        let spec = CDISpec(inventory: inventory, kind: kind)
        for skipped in spec.skipped { warn("note: \(skipped)") }
        if spec.devices.isEmpty {
            throw CommandFailure("cdi: no device is bound to vfio-pci in a viable IOMMU group; bind one first (vfioctl bind ADDRESS)")
        }
        let text = spec.json.rendered() + "\n"
        guard let output, output != "-" else {
            FileHandle.standardOutput.write(Data(text.utf8))
            return
        }
        // A runtime may read the directory at any moment: it must see the old spec or the new one.
        try OutputFile.write(Array(text.utf8), to: output, command: "cdi")
        warn("\(output): \(spec.devices.count) device\(spec.devices.count == 1 ? "" : "s") of kind \(kind)")
    }
}

/// A CDI kind, "vendor/class": the vendor a DNS subdomain, the class 1-63 characters that
/// begin and end alphanumeric with `-_.` between (the CDI spec's rules).
struct CDIKind: ExpressibleByArgument, CustomStringConvertible, Equatable {
    let vendor: String
    let deviceClass: String

    init(vendor: String, deviceClass: String) {
        self.vendor = vendor
        self.deviceClass = deviceClass
    }

    init?(argument: String) {
        let parts = argument.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, CDIKind.isName(parts[1]), parts[0].count <= 253,
              !parts[0].isEmpty, parts[0].split(separator: ".", omittingEmptySubsequences: false).allSatisfy(CDIKind.isLabel) else { return nil }
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

    var description: String { vendor + "/" + deviceClass }
    static var defaultValueDescription: String { "vfioctl/pci" }
}

/// The spec, built from the inventory alone (pure: nothing is read or written here).
struct CDISpec {
    /// 0.6.0 added annotations, which carry each device's address and group.
    static let version = "0.6.0"

    struct Device {
        let name: String
        let address: PCIAddress
        let group: Int
        let vendorDevice: String
    }

    let kind: CDIKind
    var devices: [Device] = []
    var skipped: [String] = []

    init(inventory: PCIInventory, kind: CDIKind) {
        self.kind = kind
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
            // CDI names may not contain ':'.
            let name = device.address.description.replacingOccurrences(of: ":", with: "-")
            devices.append(Device(name: name, address: device.address, group: group,
                                  vendorDevice: (hexID(device.vendorID) ?? "????") + ":" + (hexID(device.deviceID) ?? "????")))
        }
    }

    var json: JSONValue {
        let node: (String) -> JSONValue = { .object([("path", .string($0))]) }
        return .object([
            ("cdiVersion", .string(Self.version)),
            ("kind", .string(kind.description)),
            ("devices", .array(devices.map { device in
                .object([
                    ("name", .string(device.name)),
                    ("annotations", .object([
                        ("vfioctl/pci-address", .string(device.address.description)),
                        ("vfioctl/iommu-group", .string(String(device.group))),
                        ("vfioctl/vendor-device", .string(device.vendorDevice)),
                    ])),
                    ("containerEdits", .object([("deviceNodes", .array([node("/dev/vfio/\(device.group)")]))])),
                ])
            })),
            ("containerEdits", .object([("deviceNodes", .array([node("/dev/vfio/vfio")]))])),
        ])
    }
}
