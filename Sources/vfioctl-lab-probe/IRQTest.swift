import ArgumentParser
import PCIInventory
import TestKit
import TextFormat
import VFIO
import VfioctlCommands

/// `vfioctl-lab-probe irq-test`: `vfioctl irq test` with the device raising its own interrupts
/// (edu: INTx, MSI; e1000e: INTx, MSI, MSI-X), which needs the test devices' registers.
struct IRQTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "irq-test",
        abstract: "Make a test device raise every vector of an IRQ index and check each arrives once on its own eventfd.",
        discussion: """
            The device raises the interrupts through its registers: QEMU's edu (1234:11e8:
            intx, msi) or the Intel 82574L / QEMU e1000e (8086:10d3: intx, msi, msix, one vector \
            per interrupt cause). For INTx it also checks the kernel's automasking: an \
            interrupt raised while the line is masked must wait for the unmask and then arrive \
            once. The output is `vfioctl irq test`'s.

            Examples:
              vfioctl-lab-probe irq-test 0000:00:04.0 --index msix
              vfioctl-lab-probe irq-test 00:02.0 --index intx --json
            """
    )
    @OptionGroup var global: GlobalOptions
    @OptionGroup var backend: BackendOption
    @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F.", valueName: "address"))
    var address: DeviceAddress
    @Option(name: .long, help: ArgumentHelp("The IRQ index: intx, msi or msix.", valueName: "index"))
    var index: IRQIndexArgument
    @Option(name: .long, help: ArgumentHelp("How many vectors (default: all the device can raise).", valueName: "n"))
    var vectors: Int?
    @Option(name: .long, help: ArgumentHelp("Milliseconds to wait for each interrupt.", valueName: "ms"))
    var timeout: Int32 = 2000

    func validate() throws {
        if let vectors, vectors < 1 { throw ValidationError("--vectors must be at least 1") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        let target = address.address
        let report: IRQTestJSON
        do throws(VFIOError) {
            let device = try backend.open(target, sysfsRoot: global.resolvedRoot.path)
            let ids = try device.readConfig(0, width: .dword)
            let vendor = UInt16(truncatingIfNeeded: ids), deviceID = UInt16(truncatingIfNeeded: ids >> 16)
            guard let recipe = TestDeviceInterrupts.forDevice(vendor: vendor, device: deviceID, index: index.index) else {
                throw VFIOError.unsupported("vfioctl-lab-probe cannot make \(hex4(vendor)):\(hex4(deviceID)) raise \(PCIIRQ.name(index.index)) itself (it knows edu 1234:11e8: intx, msi; e1000e 8086:10d3: intx, msi, msix); `vfioctl irq test` checks the eventfd wiring from the kernel side on any device")
            }
            var check = InterruptCheck(device: device, index: index.index, source: .device(recipe))
            check.timeoutMilliseconds = timeout
            report = IRQTestJSON(address: target.description, index: index.name, source: "device", recipe: recipe.device.rawValue,
                                 report: try check.run(vectors: vectors))
        } catch {
            throw CommandFailure("irq-test \(target): \(error.description)")
        }
        try report.emit(json: global.json)
    }
}

/// --index: intx, msi or msix.
struct IRQIndexArgument: ExpressibleByArgument {
    let name: String
    let index: UInt32
    init?(argument: String) {
        switch argument {
        case "intx": index = PCIIRQ.intx
        case "msi": index = PCIIRQ.msi
        case "msix": index = PCIIRQ.msix
        default: return nil
        }
        name = argument
    }
    static var allValueStrings: [String] { ["intx", "msi", "msix"] }
}
