import ArgumentParser
import PCIBinding
import PCIInventory
import TextFormat
import VFIO

extension ResetMethod: ExpressibleByArgument {}

struct ResetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reset",
        abstract: "Reset a device bound to vfio-pci through VFIO, and check that it answers afterwards.",
        discussion: """
            Without --method, the first of the device's sysfs reset_method (the kernel's order). \
            A function method (flr, af_flr, pm, bus, acpi, device_specific, cxl_bus) is done with \
            VFIO_DEVICE_RESET, reset_method narrowed to it for the call. `hot` (and `bus` when the \
            device shares its bus, so the kernel cannot reset it alone) resets the whole slot or \
            bus with VFIO_DEVICE_PCI_HOT_RESET: every device there (the affected set) must be on \
            vfio-pci and used by nobody else. Afterwards config space must answer with a vendor ID \
            other than all ones.

            Exit status: 0 reset and answering, 3 refused (nothing reset), 1 failed or not answering.

            Examples:
              vfioctl reset 0000:00:04.0
              vfioctl reset 01:01.0 --method hot --json
            """
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var backend: BackendOption
    @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address")) var address: PCIAddress
    @Option(help: ArgumentHelp("flr, af_flr, pm, bus, acpi, device_specific, cxl_bus or hot.", valueName: "method"))
    var method: ResetMethod?

    struct Answer: Encodable {
        let address: String
        let group: Int
        let vendor: String
        let answers: Bool
    }

    struct Report: Encodable {
        let address: String
        let method: String
        let devices: [Answer]
        let ok: Bool
    }

    func run() throws {
        let target = address
        let root = global.resolvedRoot
        let inventory = try InventoryLoader.load(global, detail: .full)
        let device = try InventoryLoader.device(target, in: inventory)
        let outcome: ResetOutcome
        do {
            outcome = try DeviceReset.perform(target, requested: method, offered: device.resetMethods, group: device.iommuGroup ?? -1,
                                              backend: backend.backend, sysfsRoot: root.path) { affected in
                try refuseUnlessFree(affected, inventory: inventory, root: root)
            }
        } catch let failure as DeviceResetError {
            throw CommandFailure(failure.description)
        }
        let answers = outcome.devices.map {
            Answer(address: $0.address.description, group: $0.group, vendor: $0.vendor.hex(), answers: $0.answers)
        }
        let report = Report(address: target.description, method: outcome.method.rawValue, devices: answers, ok: outcome.allAnswer)
        if global.json {
            print(try JSONOutput.encode(report))
        } else {
            let scope = outcome.method == .hot ? "hot reset of \(answers.count) device(s)" : "\(outcome.method.rawValue) reset"
            print("\(target): \(scope)")
            for item in answers {
                print("  \(item.address) (group \(item.group)): " + (item.answers ? "answers, vendor \(item.vendor)" : "does not answer (config space reads \(item.vendor))"))
            }
        }
        if !report.ok { throw ExitCode(1) }
    }

    /// A reset (a hot reset: every affected device) must not hit a device under a host driver or
    /// one another process (a VM) holds. Refused with exit 3, nothing reset.
    func refuseUnlessFree(_ affected: [AffectedDevice], inventory: PCIInventory, root: SysfsRoot) throws {
        var reasons: [String] = []
        for member in affected where inventory.device(member.address)?.isOnVFIO != true {
            let driver = inventory.device(member.address)?.driver ?? "no driver"
            reasons.append("\(member.address) (group \(member.group)) is on \(driver), and a hot reset would reset it too: bind it to vfio-pci first (vfioctl bind \(member.address) --group)")
        }
        let holders = HolderReader(sysfs: root).holders(of: affected.map(\.address))
        for (address, held) in holders.sorted(by: { $0.key < $1.key }) {
            reasons.append(HolderMatcher.evidence(address, holders: held))
        }
        guard !reasons.isEmpty else { return }
        let affectedList = affected.map { "\($0.address) (group \($0.group))" }.joined(separator: ", ")
        if global.json {
            print(try JSONOutput.encode(["address": address.description, "action": "refused", "reason": reasons.joined(separator: "; ")]))
        } else {
            print("\(address): reset refused, nothing was reset; it would reset \(affectedList)")
            for reason in reasons { print("  \(reason)") }
        }
        throw ExitCode(BindingExit.refused)
    }
}
