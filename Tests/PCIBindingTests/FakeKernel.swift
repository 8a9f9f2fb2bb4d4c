import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SysfsFixtures
@testable import PCIBinding
@testable import PCIInventory

/// An emulation of the PCI core's binding files over a fixture tree: what the kernel does when
/// vfioctl writes driver_override, DRIVER/unbind, drivers_probe and drivers/NAME/bind (the driver
/// link moves, vfio-pci's group node appears), with failures and hangs on demand.
final class FakePCIKernel: SysfsWriting, @unchecked Sendable {
    let root: String
    let devRoot: String
    private let lock = NSLock()
    /// The driver a device's probe picks without an override: the one it had in the fixture.
    private var natural: [String: String] = [:]
    /// Drivers whose probe fails for these devices (vfio-pci refusing a device, say).
    private var refusals: Set<String> = []
    /// Paths (by suffix) whose write never returns.
    private var hangs: [String] = []
    private(set) var writes: [String] = []
    /// Linux 6.15 and later: `resourceN_resize` refuses while VFs are enabled.
    var refusesResizeWithVFs = false

    init(tree: TemporarySysfsTree, devRoot: String) throws {
        root = BindingValidation.resolvedPath(tree.rootPath) ?? tree.rootPath
        self.devRoot = devRoot
        for device in tree.host.devices {
            if let driver = device.driver { natural[device.address.description] = driver }
        }
        try FileManager.default.createDirectory(atPath: devRoot + "/vfio", withIntermediateDirectories: true)
    }

    func refuse(_ driver: String, for address: String) { lock.withLock { _ = refusals.insert("\(driver) \(address)") } }
    func hang(onPathEndingWith suffix: String) { lock.withLock { hangs.append(suffix) } }

    /// Takes a driver away, as `rmmod` would: its directory goes, its devices are unbound.
    func unload(_ driver: String) throws {
        for address in try FileManager.default.contentsOfDirectory(atPath: "\(root)/bus/pci/devices") where self.driver(of: address) == driver {
            unlink(devicePath(address) + "/driver")
        }
        try FileManager.default.removeItem(atPath: "\(root)/bus/pci/drivers/\(driver)")
    }

    func devicePath(_ address: String) -> String {
        BindingValidation.resolvedPath("\(root)/bus/pci/devices/\(address)") ?? "\(root)/bus/pci/devices/\(address)"
    }

    func driver(of address: String) -> String? {
        BindingValidation.resolvedPath(devicePath(address) + "/driver").map { ($0 as NSString).lastPathComponent }
    }

    func override(of address: String) -> String? {
        let text = (try? String(contentsOfFile: devicePath(address) + "/driver_override", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        return text.isEmpty || text == "(null)" ? nil : text
    }

    func failure(_ path: String, _ value: String, _ reason: String) -> BindingError {
        .sysfsWrite(path: path, value: value, reason: reason)
    }

    func write(_ value: String, to path: String, timeout: Double) throws(BindingError) {
        let hangsHere = lock.withLock { hangs.contains { path.hasSuffix($0) } }
        if hangsHere {
            // A driver stuck in probe: the write has not returned when the timeout ends.
            throw .sysfsTimeout(path: path, value: value.trimmingCharacters(in: .newlines), seconds: timeout,
                                state: "the emulated kernel never returns")
        }
        lock.withLock { writes.append("\(path) \(value)") }
        let text = value.trimmingCharacters(in: .newlines)
        let name = (path as NSString).lastPathComponent
        let directory = (path as NSString).deletingLastPathComponent
        switch name {
        case "driver_override":
            do { try ((text.isEmpty ? "(null)" : text) + "\n").write(toFile: path, atomically: false, encoding: .utf8) } catch {
                throw failure(path, text, "\(error)")
            }
        case "unbind":
            guard driver(of: text).map({ "\(root)/bus/pci/drivers/\($0)" }) == directory else {
                throw failure(path, text, "No such device")
            }
            unlink(devicePath(text) + "/driver")
        case "bind":
            let driverName = (directory as NSString).lastPathComponent
            guard driver(of: text) == nil else { throw failure(path, text, "Device or resource busy") }
            if let override = override(of: text), override != driverName { throw failure(path, text, "No such device") }
            try attach(text, driverName, path: path)
        case "drivers_probe":
            guard driver(of: text) == nil else { return }
            guard let candidate = override(of: text) ?? natural[text],
                  FileManager.default.fileExists(atPath: "\(root)/bus/pci/drivers/\(candidate)") else {
                throw failure(path, text, "No such device")
            }
            try attach(text, candidate, path: path)
        case _ where name.hasPrefix("resource") && name.hasSuffix("_resize"):
            try resize(name, value: text, directory: directory, path: path)
        default:
            throw failure(path, text, "the fake kernel does not emulate \(name)")
        }
    }

    private func attach(_ address: String, _ driverName: String, path: String) throws(BindingError) {
        if lock.withLock({ refusals.contains("\(driverName) \(address)") }) {
            throw failure(path, address, "No such device (\(driverName) refused it)")
        }
        guard symlink("\(root)/bus/pci/drivers/\(driverName)", devicePath(address) + "/driver") == 0 else {
            throw failure(path, address, String(cString: strerror(errno)))
        }
        if driverName == BindPlan.targetDriver,
           let group = BindingValidation.resolvedPath(devicePath(address) + "/iommu_group").map({ ($0 as NSString).lastPathComponent }) {
            _ = FileManager.default.createFile(atPath: "\(devRoot)/vfio/\(group)", contents: nil)
        }
    }
}

/// A small host for binding: a host bridge, a dual-port NIC (igb) sharing IOMMU group 1, an
/// NVMe (nvme) alone in group 2; vfio-pci and pci-stub registered.
func bindingHost(extraEndpoints: Int = 0) -> FixtureHost {
    var devices = [
        FixtureDevice(address: FixtureAddress(bus: 0, device: 0), vendorID: 0x8086, deviceID: 0x2020, classCode: 0x060000, iommuGroup: 0),
        FixtureDevice(address: FixtureAddress(bus: 1, device: 0, function: 0), vendorID: 0x8086, deviceID: 0x1521,
                      subsystemVendorID: 0x8086, subsystemDeviceID: 0x0001, classCode: 0x020000, driver: "igb", iommuGroup: 1),
        FixtureDevice(address: FixtureAddress(bus: 1, device: 0, function: 1), vendorID: 0x8086, deviceID: 0x1521,
                      subsystemVendorID: 0x8086, subsystemDeviceID: 0x0001, classCode: 0x020000, driver: "igb", iommuGroup: 1),
        FixtureDevice(address: FixtureAddress(bus: 2, device: 0), vendorID: 0x144d, deviceID: 0xa808,
                      subsystemVendorID: 0x144d, subsystemDeviceID: 0xa801, classCode: 0x010802, driver: "nvme", iommuGroup: 2),
    ]
    // More endpoints in group 1, eight functions a slot, from bus 0x10 on.
    for index in 0..<extraEndpoints {
        devices.append(FixtureDevice(
            address: FixtureAddress(bus: UInt8(0x10 + index / 256), device: UInt8((index / 8) % 32), function: UInt8(index % 8)),
            vendorID: 0x8086, deviceID: 0x1520, subsystemVendorID: 0x8086, subsystemDeviceID: 0x0001,
            classCode: 0x020000, driver: "igbvf", iommuGroup: 1))
    }
    return FixtureHost(iommu: .intel, devices: devices, extraDrivers: ["vfio-pci", "pci-stub"])
}

/// A fixture tree, its emulated kernel, a state directory and a binder wired to them.
struct BindingLab {
    let tree: TemporarySysfsTree
    let kernel: FakePCIKernel
    let state: String
    let devRoot: String
    var root: SysfsRoot { SysfsRoot(path: tree.rootPath) }

    init(_ host: FixtureHost = bindingHost()) throws {
        tree = try TemporarySysfsTree.create(host)
        state = tree.rootPath + "-state"
        devRoot = tree.rootPath + "-dev"
        kernel = try FakePCIKernel(tree: tree, devRoot: devRoot)
    }

    func binder(environment: [String: String] = [:], ioTimeout: Double = 30) -> Binder {
        let hooks = BindingTestHooks(environment: environment)
        var binder = Binder(root: root, devRoot: devRoot, journal: BindingJournal(directory: state, hooks: hooks),
                            hooks: hooks)
        binder.kernel = kernel
        binder.settleTimeout = 0.2
        binder.ioTimeout = ioTimeout
        return binder
    }

    func inventory() throws -> PCIInventory { try PCIInventory.scan(root: root, detail: .full) }

    func plan(_ text: String, group: Bool = false) throws -> BindPlan {
        try BindPlan.bind(try PCIAddress(parsing: text), wholeGroup: group, force: false, inventory: try inventory(), facts: HostFacts())
    }

    func driver(_ address: String) -> String? { kernel.driver(of: address) }

    func remove() {
        try? tree.remove()
        try? FileManager.default.removeItem(atPath: state)
        try? FileManager.default.removeItem(atPath: devRoot)
    }
}
