import ArgumentParser
import Foundation
import PCIInventory
import VFIO
import VMMConfig

/// `vfioctl cdi`: a Container Device Interface spec for the devices bound to vfio-pci, so that
/// container runtimes (and KubeVirt's launcher pods) can be handed /dev/vfio nodes by name.
struct CDICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cdi",
        abstract: "Write a CDI spec (Container Device Interface) naming every vfio-pci device with its /dev/vfio nodes.",
        discussion: """
            One CDI device per PCI function on a VFIO driver whose IOMMU group is viable, named \
            after its address with dashes for colons (0000-01-00.0). With type1 each device gets \
            /dev/vfio/<group> and the spec /dev/vfio/vfio; with iommufd each device gets its own \
            file /dev/vfio/devices/vfioN and the spec /dev/iommu (auto, the default: iommufd \
            where /dev/iommu and every device's file exist; --backend iommufd elsewhere, and a \
            mixed set, are refused with exit 3). Write it where runtimes look \
            (/etc/cdi or /var/run/cdi), then request KIND=NAME, e.g. \
            `podman run --device vfioctl/pci=0000-01-00.0`.

            Examples:
              vfioctl cdi
              vfioctl cdi --kind example.com/gpu --output /etc/cdi/vfioctl.json
            """
    )
    @OptionGroup var global: GlobalOptions
    @Option(name: .long, help: ArgumentHelp("The spec's kind, VENDOR/CLASS.", valueName: "kind"))
    var kind: CDIKindArgument = CDIKindArgument(.vfioctl)
    @Option(help: ArgumentHelp("Which device nodes a container gets: auto (iommufd where /dev/iommu and every device's VFIO device file exist, else type1), type1 (/dev/vfio/vfio and /dev/vfio/N) or iommufd (/dev/iommu and /dev/vfio/devices/vfioN).", valueName: "backend"))
    var backend: VFIOBackendRequest = .auto
    @Option(name: .long, help: ArgumentHelp("Look for iommu here instead of /dev.", valueName: "dir"))
    var devRoot: String = "/dev"
    @Option(name: .long, help: ArgumentHelp("Write the spec to this file (a new file, or a regular file replaced atomically; - for stdout).", valueName: "path"))
    var output: String?

    func run() throws {
        let inventory = try InventoryLoader.load(global, detail: .summary)
        let spec: CDISpec
        do {
            spec = try CDISpec(inventory: inventory, kind: kind.value, backend: backend,
                               hasIOMMUFD: FileManager.default.fileExists(atPath: devRoot + "/iommu"))
        } catch {
            warn("cdi: refused: \(error.description)")
            throw ExitCode(BindingExit.refused)
        }
        for skipped in spec.skipped { warn("note: \(skipped)") }
        if spec.devices.isEmpty {
            throw CommandFailure("cdi: no device is bound to vfio-pci in a viable IOMMU group; bind one first (vfioctl bind ADDRESS)")
        }
        let text = Self.json(spec).rendered() + "\n"
        guard let output, output != "-" else {
            FileHandle.standardOutput.write(Data(text.utf8))
            return
        }
        // A runtime may read the directory at any moment: it must see the old spec or the new one.
        try OutputFile.write(Array(text.utf8), to: output, command: "cdi")
        warn("\(output): \(spec.devices.count) device\(spec.devices.count == 1 ? "" : "s") of kind \(kind.value) (\(spec.backend.rawValue))")
    }

    /// The spec as CDI JSON.
    static func json(_ spec: CDISpec) -> JSONValue {
        let nodes: ([String]) -> JSONValue = { .array($0.map { .object([("path", .string($0))]) }) }
        return .object([
            ("cdiVersion", .string(CDISpec.version)),
            ("kind", .string(spec.kind.description)),
            ("devices", .array(spec.devices.map { device in
                .object([
                    ("name", .string(device.name)),
                    ("annotations", .object([
                        ("vfioctl/pci-address", .string(device.address.description)),
                        ("vfioctl/iommu-group", .string(String(device.group))),
                        ("vfioctl/vendor-device", .string(device.vendorDevice)),
                    ] + (device.deviceFile.map { [("vfioctl/vfio-device-file", JSONValue.string($0))] } ?? []))),
                    ("containerEdits", .object([("deviceNodes", nodes(device.deviceNodes))])),
                ])
            })),
            ("containerEdits", .object([("deviceNodes", nodes(spec.commonDeviceNodes))])),
        ])
    }
}

/// `--kind VENDOR/CLASS`, parsed by the library's rules.
struct CDIKindArgument: ExpressibleByArgument {
    let value: CDIKind
    init(_ value: CDIKind) { self.value = value }
    init?(argument: String) {
        guard let kind = CDIKind(parsing: argument) else { return nil }
        value = kind
    }
    static var defaultValueDescription: String { CDIKind.vfioctl.description }
    var defaultValueDescription: String { value.description }
}

