import PCIBinding
import PCIInventory

/// The host's boot-time bindings, read under the command's roots and planned against the
/// devices present: for `persist list`, `persist check`, `persist add` and `doctor`.
enum BootBindingLoader {
    static func plan(configRoot: String, procRoot: String, rulesDirectory: String?, inventory: PCIInventory?) -> BootBindingPlan {
        var reader = BootBindingReader(configRoot: configRoot)
        reader.procRoot = procRoot
        reader.rulesDirectory = rulesDirectory
        let devices = (inventory?.devices ?? []).map(BootBindingDevice.init)
        return BootBindingPlan.plan(devices: devices, declarations: reader.read())
    }

    /// "driverctl → vfio-pci (/etc/driverctl.d/pci-0000:01:00.0:1)".
    static func text(_ source: BootBindingSource) -> String {
        "\(source.mechanism.rawValue) → \(source.driver) (\(source.location))"
    }

    /// `{mechanism, driver, file, line}`.
    static func json(_ source: BootBindingSource) -> JSONValue {
        .object([("mechanism", .string(source.mechanism.rawValue)), ("driver", .string(source.driver)),
                 ("file", .string(source.location.file)), ("line", .optional(source.location.line))])
    }

    /// `{status, address, file, line, text}`.
    static func json(_ finding: BootBindingFinding) -> JSONValue {
        .object([("status", .string(finding.status.rawValue)), ("address", .optional(finding.address?.description)),
                 ("file", .optional(finding.location?.file)), ("line", .optional(finding.location?.line)), ("text", .string(finding.text))])
    }
}
