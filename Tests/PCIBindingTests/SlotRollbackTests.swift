import Foundation
import SysfsFixtures
import Testing
@testable import PCIBinding
@testable import PCIInventory

/// Plays the kernel's part on a fixture tree, from another thread: a device whose
/// driver_override is vfio-pci and whose address was written to drivers_probe gets the vfio-pci
/// driver link (only the devices in `willBind`), and an address written to a driver's `bind`
/// gets that driver's link.
final class FakeKernel: @unchecked Sendable {
    let root: String
    let willBind: Set<String>
    let drivers: [String]
    private let lock = NSLock()
    private var running = true

    init(root: String, willBind: Set<String>, drivers: [String]) {
        self.root = root
        self.willBind = willBind
        self.drivers = drivers
    }

    func start() {
        Thread.detachNewThread { [self] in
            while lock.withLock({ running }) {
                step()
                usleep(2_000)
            }
        }
    }

    func stop() { lock.withLock { running = false } }

    private func read(_ path: String) -> String {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func link(_ address: String, to driver: String) {
        let path = "\(root)/bus/pci/devices/\(address)/driver"
        try? FileManager.default.removeItem(atPath: path)
        try? FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: "\(root)/bus/pci/drivers/\(driver)")
    }

    private func step() {
        let probe = "\(root)/bus/pci/drivers_probe"
        let probed = read(probe)
        if willBind.contains(probed), read("\(root)/bus/pci/devices/\(probed)/driver_override") == "vfio-pci" {
            link(probed, to: "vfio-pci")
            try? "".write(toFile: probe, atomically: false, encoding: .utf8)
        }
        for driver in drivers {
            let bind = "\(root)/bus/pci/drivers/\(driver)/bind"
            let address = read(bind)
            guard !address.isEmpty else { continue }
            link(address, to: driver)
            try? "".write(toFile: bind, atomically: false, encoding: .utf8)
        }
    }
}

@Suite struct SlotRollbackTests {
    /// The GPU binds, its audio function (another group) does not: the GPU goes back too.
    @Test func aFunctionThatDoesNotBindTakesTheWholeSlotBack() throws {
        let tree = try TemporarySysfsTree.create(SplitSlotHost.fixture)
        let state = tree.rootPath + "-state", dev = tree.rootPath + "-dev"
        defer {
            try? tree.remove()
            try? FileManager.default.removeItem(atPath: state)
            try? FileManager.default.removeItem(atPath: dev)
        }
        let gpu = GPUWorkstation.gpu.description, audio = GPUWorkstation.gpuAudio.description
        for driver in ["nouveau", "snd_hda_intel", "vfio-pci"] {
            let directory = "\(tree.rootPath)/bus/pci/drivers/\(driver)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for file in ["bind", "unbind"] where !FileManager.default.fileExists(atPath: "\(directory)/\(file)") {
                try "".write(toFile: "\(directory)/\(file)", atomically: false, encoding: .utf8)
            }
        }
        try FileManager.default.createDirectory(atPath: dev + "/vfio", withIntermediateDirectories: true)
        try "".write(toFile: "\(dev)/vfio/\(GPUWorkstation.Group.gpu)", atomically: false, encoding: .utf8)

        let root = SysfsRoot(path: tree.rootPath)
        let inventory = try PCIInventory.scan(root: root, detail: .full)
        let plans = try BindPlan.bindSlot(try PCIAddress(parsing: gpu), wholeGroup: false, force: false,
                                          inventory: inventory, facts: HostFacts())
        var binder = Binder(root: root, devRoot: dev, journal: BindingJournal(directory: state))
        binder.settleTimeout = 1
        let kernel = FakeKernel(root: tree.rootPath, willBind: [gpu], drivers: ["nouveau", "snd_hda_intel"])
        kernel.start()
        defer { kernel.stop() }
        let outcomes = try binder.apply(plans)
        #expect(outcomes.map(\.address) == [gpu, audio])
        #expect(outcomes.map(\.action) == [.rolledBack, .rolledBack])
        #expect(outcomes[0].reason == "undone because \(audio) could not be bound")
        let reader = SysfsReader()
        #expect(reader.readLinkBasename("\(tree.rootPath)/bus/pci/devices/\(gpu)/driver") == "nouveau")
        #expect(reader.readLinkBasename("\(tree.rootPath)/bus/pci/devices/\(audio)/driver") == "snd_hda_intel")
        #expect(try BindingJournal(directory: state).entries().isEmpty)
    }
}
