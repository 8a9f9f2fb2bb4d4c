// vfioctl-lab-probe: checks that need a test device's registers (QEMU's edu DMA engine, the
// edu and e1000e interrupt recipes) or a probe guest. It is built from the source tree for the
// lab, which carries it into the guest next to vfioctl; no shipping product contains it.
import ArgumentParser
import Foundation
import KVM
import PCIInventory
import Passthrough
import TestKit
import VFIO
import VfioctlCommands

struct LabProbe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vfioctl-lab-probe",
        abstract: "Passthrough checks on test devices (edu, e1000e) and probe guests; for the lab, not shipped.",
        discussion: """
            Every command needs a device bound to vfio-pci (vfioctl bind); the vm-* commands also \
            need /dev/kvm. Exit status: 0 the check passed, 1 it failed, 64 usage error.
            """,
        subcommands: [VMSmokeCommand.self, VMDMASmokeCommand.self, EduTestCommand.self, PeerToPeerCommand.self, IRQTestCommand.self, WithTestHooksCommand.self]
    )
}

/// A PCI address argument, parsed once.
struct DeviceAddress: ExpressibleByArgument, CustomStringConvertible {
    let address: PCIAddress
    init?(argument: String) {
        guard let address = try? PCIAddress(parsing: argument) else { return nil }
        self.address = address
    }
    var description: String { address.description }
}

/// A VM built as a VMM builds one, with one device passed through: the PassthroughVM first
/// (its irqchip must precede the vCPU), then the probe guest's RAM and vCPU, then the device.
struct ProbeVM {
    let passthrough: PassthroughVM
    let guest: ProbeGuest
    let device: PassthroughDevice
    var address: PCIAddress { device.address }

    static func open(_ address: PCIAddress, sysfsRoot: String, backend: BackendOption) throws -> ProbeVM {
        let system: KVMSystem
        do { system = try KVMSystem() } catch { throw CommandFailure(error.description) }
        let chosen: VFIOBackend
        do { chosen = try backend.resolve(address, sysfsRoot: sysfsRoot) } catch { throw CommandFailure("\(address): \(error.description)") }
        do throws(PassthroughError) {
            let vm = try viaKVM { () throws(KVMError) in
                let vm = try system.createVM()
                try vm.setX86RealModeAreas()
                return vm
            }
            let passthrough = try PassthroughVM(vm: vm, backend: chosen, sysfsRoot: sysfsRoot)
            let guest = try ProbeGuest(vm: vm)
            let device = try passthrough.addDevice(address)
            return ProbeVM(passthrough: passthrough, guest: guest, device: device)
        } catch {
            throw CommandFailure("\(address): \(error.description)")
        }
    }
}

/// What a probe VM's check reports: JSON or text, and whether it passed.
protocol ProbeReport: Encodable {
    var ok: Bool { get }
    func printText()
}

extension ProbeVM {
    /// Runs `body` on a fresh probe VM with the device at `address`, prints its report (JSON
    /// with --json) and fails the command with `failure` unless the report is ok.
    static func check<R: ProbeReport>(_ name: String, _ address: PCIAddress, global: GlobalOptions, backend: BackendOption,
                                      failure: String, _ body: (ProbeVM) throws(PassthroughError) -> R) throws {
        let probe = try ProbeVM.open(address, sysfsRoot: global.resolvedRoot.path, backend: backend)
        let report: R
        do throws(PassthroughError) {
            report = try body(probe)
        } catch {
            throw CommandFailure("\(name) \(address): \(error.description)")
        }
        if global.json { print(try JSONOutput.encode(report)) } else { report.printText() }
        guard report.ok else { throw CommandFailure("\(name) \(address): \(failure) (see above)") }
    }
}

/// Refuses any device but QEMU's edu before anything is programmed.
func requireEdu(_ device: VFIODevice) throws(PassthroughError) {
    let ids = try viaVFIO { () throws(VFIOError) in try device.readConfig(0, width: .dword) }
    let vendor = UInt16(truncatingIfNeeded: ids), deviceID = UInt16(truncatingIfNeeded: ids >> 16)
    guard vendor == EduRegisters.vendorID, deviceID == EduRegisters.deviceID else {
        throw .dma("this check drives QEMU's edu DMA engine (1234:11e8); \(device.address) is \(String(format: "%04x:%04x", vendor, deviceID))")
    }
}

LabProbe.main()
