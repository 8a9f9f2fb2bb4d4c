import ArgumentParser
import Foundation
import PCIInventory
import TextFormat
import VFIO

/// `vfioctl irq`: a device's interrupts delivered to eventfds.
public struct IRQCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "irq",
        abstract: "Check that a device's INTx, MSI or MSI-X vectors are wired to eventfds (the device must be bound to vfio-pci).",
        discussion: """
            Examples:
              vfioctl irq test 0000:00:04.0 --index msix
              vfioctl irq test 00:05.0 --index msix --vectors 8 --json
            """,
        subcommands: [Test.self]
    )
    public init() {}

    struct Test: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "test",
            abstract: "Give every vector of an IRQ index its own eventfd, have the kernel signal each, and check it arrives there and nowhere else.",
            discussion: """
                Works on any device: the kernel signals each vector's eventfd (VFIO_IRQ_SET_DATA_NONE \
                | ACTION_TRIGGER), which checks the wiring (vectors enabled, eventfds attached) \
                without the device's help. Making a device raise its own interrupts needs its \
                registers; the lab's test devices (QEMU's edu, e1000e) have that check in the \
                vfioctl-lab-probe tool built from the source tree (irq-test).

                The command register is restored and the IRQ index disabled afterwards. \
                Exit status: 0 every vector arrived once on its own eventfd, 1 otherwise.

                Examples:
                  vfioctl irq test 0000:00:04.0 --index msix
                  vfioctl irq test 00:02.0 --index intx --json
                  vfioctl irq test 00:05.0 --index msix --vectors 8
                """
        )
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The device, DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address"))
        var address: PCIAddress
        @OptionGroup var backend: BackendOption
        @Option(name: .long, help: ArgumentHelp("The IRQ index: intx, msi or msix.", valueName: "index"))
        var index: IRQIndexName
        @Option(name: .long, help: ArgumentHelp("How many vectors (default: every vector the device has).", valueName: "n"))
        var vectors: PositiveCount?
        /// The kernel-side loopback is the only source now; the flag is accepted for scripts.
        @Flag(name: .long, help: .hidden)
        var loopback = false
        @Option(name: .long, help: ArgumentHelp("Milliseconds to wait for each interrupt.", valueName: "ms"))
        var timeout = Milliseconds(2000)

        func run() throws {
            let target = address
            let irqIndex = index.index
            let report: IRQTestJSON
            do throws(VFIOError) {
                let device = try backend.open(target, sysfsRoot: global.resolvedRoot.path)
                var check = InterruptCheck(device: device, index: irqIndex, source: .loopback)
                check.timeoutMilliseconds = timeout.value
                report = IRQTestJSON(address: target.description, index: index.rawValue, source: "loopback", recipe: nil,
                                     report: try check.run(vectors: vectors?.value))
            } catch {
                throw CommandFailure("irq test \(target): \(error.description)")
            }
            try report.emit(json: global.json)
        }
    }
}

/// `irq test` output (also vfioctl-lab-probe's `irq-test`, whose devices raise the interrupts).
package struct IRQTestJSON: Encodable {
    struct Vector: Encodable {
        let vector: Int
        let signals: UInt64
        let microseconds: Double?
        let stray_vectors: [Int]
    }
    struct Masking: Encodable {
        let signals_while_masked: UInt64
        let signals_after_unmask: UInt64
    }
    let address: String
    let index: String
    let source: String
    /// Which device recipe raised the interrupts (edu, e1000e), null for loopback.
    let recipe: String?
    let vector_count: UInt32
    let vectors: [Vector]
    let masking: Masking?
    let ok: Bool

    package init(address: String, index: String, source: String, recipe: String?, report: InterruptCheck.Report) {
        self.address = address
        self.index = index
        self.source = source
        self.recipe = recipe
        self.vector_count = report.vectorCount
        self.vectors = report.vectors.map { Vector(vector: $0.vector, signals: $0.signals, microseconds: $0.microseconds, stray_vectors: $0.strayVectors) }
        self.masking = report.masking.map { Masking(signals_while_masked: $0.signalsWhileMasked, signals_after_unmask: $0.signalsAfterUnmask) }
        self.ok = report.ok
    }

    /// Prints the report (JSON or text) and fails the command unless every vector arrived once.
    package func emit(json: Bool) throws {
        if json { print(try JSONOutput.encode(self)) } else { printText() }
        guard ok else { throw CommandFailure("irq test \(address): not every \(index) vector arrived exactly once on its own eventfd (see above)") }
    }

    func printText() {
        print("irq test \(address) \(index) (\(vector_count) vector\(vector_count == 1 ? "" : "s") on the device), raised by \(recipe.map { "the device (\($0))" } ?? "the kernel (loopback)")")
        for vector in vectors {
            let time = vector.microseconds.map { String(format: "%.0f us", $0) } ?? "-"
            let stray = vector.stray_vectors.isEmpty ? "" : "; ALSO signalled: \(vector.stray_vectors.map(String.init).joined(separator: " "))"
            print("  vector \(vector.vector): \(vector.signals == 1 ? "arrived" : vector.signals == 0 ? "DID NOT ARRIVE" : "arrived \(vector.signals) times") (\(time))\(stray)")
        }
        if let masking {
            print("  INTx automask: \(masking.signals_while_masked) signal(s) while masked, \(masking.signals_after_unmask) after unmask")
        }
        print(ok ? "ok" : "FAILED")
    }
}
