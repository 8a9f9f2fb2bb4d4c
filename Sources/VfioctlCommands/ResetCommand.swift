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
            Without --method, the first of the device's sysfs reset_method (the kernel's order).
            A function method (flr, af_flr, pm, bus, acpi, device_specific, cxl_bus) is done with
            VFIO_DEVICE_RESET, reset_method narrowed to it for the call. `hot` (and `bus` when the
            device shares its bus, so the kernel cannot reset it alone) resets the whole slot or
            bus with VFIO_DEVICE_PCI_HOT_RESET: every device there (the affected set) must be on
            vfio-pci and used by nobody else. Afterwards config space must answer with a vendor ID
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
        var chosen: ResetMethod
        do throws(VFIOError) {
            chosen = try ResetMethod.choose(requested: method, offered: device.resetMethods, address: target)
        } catch { throw CommandFailure(error.description) }
        // Someone else using the device (a VM) would have it reset under them.
        try refuseUnlessFree([AffectedDevice(address: target, group: device.iommuGroup ?? -1)], inventory: inventory, root: root)
        var answers: [Answer] = []
        var affected: [AffectedDevice] = []
        do throws(VFIOError) {
            // Closed at the end of this block: a hot reset reopens its group with the others.
            let opened = try backend.open(target, sysfsRoot: root.path)
            // The kernel resets the bus for one function only when it is alone there.
            if chosen == .bus && !opened.info.supportsReset { chosen = .hot }
            if chosen == .hot {
                affected = try opened.hotResetAffected()
            } else {
                try opened.reset(method: chosen, sysfsRoot: root.path)
                answers.append(try answer(opened))
            }
        } catch {
            throw CommandFailure("reset \(target): \(error.description)")
        }
        if chosen == .hot {
            try refuseUnlessFree(affected, inventory: inventory, root: root)
            do throws(VFIOError) {
                // One DMA space holds every affected device, as the kernel requires of its caller:
                // one container with every group (type1), or one iommufd (iommufd).
                let space = try makeDMASpace(try backend.resolve(target, sysfsRoot: root.path))
                let devices = try affected.map { (member) throws(VFIOError) in
                    try space.openDevice(member.address, sysfsRoot: root.path, devVFIO: "/dev/vfio")
                }
                guard let own = devices.first(where: { $0.address == target }) else {
                    throw VFIOError.unsupported("\(target) is not in its own hot reset set")
                }
                try own.hotReset(groups: (space as? VFIOContainer)?.attachedGroups ?? [])
                for member in devices { answers.append(try answer(member)) }
            } catch {
                throw CommandFailure("hot reset \(target): \(error.description)")
            }
        }
        let report = Report(address: target.description, method: chosen.rawValue, devices: answers, ok: answers.allSatisfy(\.answers))
        if global.json {
            print(try JSONOutput.encode(report))
        } else {
            let scope = chosen == .hot ? "hot reset of \(answers.count) device(s)" : "\(chosen.rawValue) reset"
            print("\(target): \(scope)")
            for item in answers {
                print("  \(item.address) (group \(item.group)): " + (item.answers ? "answers, vendor \(item.vendor)" : "does not answer (config space reads \(item.vendor))"))
            }
        }
        if !report.ok { throw ExitCode(1) }
    }

    func answer(_ device: VFIODevice) throws(VFIOError) -> Answer {
        let vendor = try device.vendorAfterReset()
        return Answer(address: device.address.description, group: try device.iommuGroupNumber(),
                      vendor: vendor.hex(), answers: vendor != 0xffff && vendor != 0)
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
