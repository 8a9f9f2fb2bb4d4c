import ArgumentParser
import Foundation
import PCIBinding
import PCIInventory
import TextFormat

/// `vfioctl rebar BDF --bar N --size SIZE|max`: resizes a BAR through the kernel's
/// `resourceN_resize`; the rules are `ResizableBARPlanner`'s, the write and check `Binder.resize`.
struct RebarCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebar",
        abstract: "Resize a BAR (PCIe Resizable BAR) of a device no driver holds.",
        discussion: """
            Writes the size to sysfs resourceN_resize (Linux 6.1 and later) and checks that the \
            device's resource file shows it. The old size is journalled first: `vfioctl unbind \
            BDF` and `vfioctl restore --all` put it back (`bind --rebar` resizes as a step of a \
            bind). The kernel resizes only while no driver is bound, \
            and from 6.15 not while VFs exist; vfioctl refuses those first, and a size the \
            upstream bridge's prefetchable window cannot hold, a size the device does not offer, \
            or a BAR without a Resizable BAR entry (exit 3, nothing changed). `vfioctl show BDF` \
            lists each resizable BAR's size and supported sizes.

            Examples:
              vfioctl rebar 0000:01:00.0 --bar 1 --size max
              vfioctl rebar 0000:01:00.0 --bar 1 --size 16G --json
            """
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: BindingOptions
    @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address"))
    var address: PCIAddress
    @Option(help: ArgumentHelp("The BAR to resize (0-5).", valueName: "n"))
    var bar: BARIndex
    @Option(help: ArgumentHelp("The new size: a power of two of at least 1M (K, M, G, T), or max for the largest the device and kernel offer.", valueName: "size"))
    var size: RebarSize

    func run() throws {
        let request = ResizableBARRequest(address: address, bar: bar.value, size: size.value)
        let binder = Binder(root: global.resolvedRoot, devRoot: options.devRoot, journal: options.journal)
        let plan: ResizableBARPlan
        do {
            let lock = try BindingLock(directory: options.journal.directory, timeout: options.lockTimeout.seconds)
            defer { withExtendedLifetime(lock) {} }
            let inventory = try InventoryLoader.load(global, detail: .full)
            do throws(BindingError) {
                plan = try ResizableBARPlanner.plan(request, inventory: inventory, bridgeWindow: binder.prefetchableWindow(of:))
                guard let device = inventory.device(plan.address) else { throw .noSuchDevice(address: address.description) }
                try binder.resizeJournalled(plan, device: device)
            } catch .refused(let reason) {
                report(nil, status: "refused", reason: reason)
                throw ExitCode(BindingExit.refused)
            }
        } catch let error as BindingError {
            throw bindingFailure(error)
        }
        report(plan, status: plan.isUnchanged ? "unchanged" : "resized", reason: nil)
    }

    func report(_ plan: ResizableBARPlan?, status: String, reason: String?) {
        if global.json {
            let value = JSONValue.object([
                ("address", .string(address.description)), ("bar", .integer(bar.value)), ("status", .string(status)),
                ("from", plan.map { .unsigned($0.currentSize) } ?? .null), ("to", plan.map { .unsigned($0.newSize) } ?? .null),
                ("reason", .optional(reason)),
            ])
            print(value.rendered())
            return
        }
        if let plan {
            print("\(plan.address) BAR \(plan.bar): \(byteCount(plan.currentSize)) -> \(byteCount(plan.newSize)): \(status)")
        } else {
            warn("rebar \(address) BAR \(bar.value): refused: \(reason ?? "")")
        }
    }
}

/// `--size`: "max", or a power of two of at least 1 MiB; anything else is a usage error.
struct RebarSize: ExpressibleByArgument {
    let value: ResizableBARRequest.Size
    init?(argument: String) {
        if argument.lowercased() == "max" { value = .maximum; return }
        guard let bytes = MemorySize.parse(argument), ResizableBARSize.code(bytes: bytes) != nil else { return nil }
        value = .bytes(bytes)
    }
}
