import ArgumentParser
import Diagnostics
import Foundation
import PCIInventory

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Say whether this host is ready for passthrough, and what to fix.",
        discussion: """
            Checks the IOMMU (and interrupt remapping), ACS on shared groups, the vfio modules and \
            /dev/vfio/vfio, KVM, RLIMIT_MEMLOCK against the guest RAM a VM would pin, huge pages, \
            kernel-version facts that bite passthrough users, and each GPU: its group, what is \
            bound, reset methods, boot display, and the `vfioctl bind` line that would make it \
            assignable. It also lists every device bound at boot (vfio-pci.ids= and pci-stub.ids= \
            on the kernel command line, modprobe.d options and softdeps, driverctl overrides, udev \
            rules that set driver_override, vfioctl's own) with the file each is written in, and \
            flags conflicts: two mechanisms for one device, an ids= that also takes another \
            device of the model or the boot display, a softdep without vfio-pci in the initramfs.

            Exit status: 0 ready (warnings allowed), 2 a problem blocks passthrough, 1 errors.

            Example:
              vfioctl doctor
              vfioctl doctor --vm-memory 32G --json
              vfioctl doctor --vm-memory 64G --vm-devices 4 --viommu
            """
    )
    @OptionGroup var global: GlobalOptions
    @Option(parsing: .unconditional, help: ArgumentHelp("Guest RAM a VM would pin, for the memlock check (e.g. 8G, 512M).", valueName: "size"))
    var vmMemory = MemorySize(8 << 30)
    @OptionGroup var vm: VMShapeOptions
    // With --sysfs-root these let the doctor judge a copied or generated host (KVM is probed
    // only on the live one).
    @Option(name: .long, help: ArgumentHelp("Read sys/kernel/osrelease, cmdline, interrupts and self/limits here instead of /proc.", valueName: "dir"))
    var procRoot: String = "/proc"
    @Option(name: .long, help: ArgumentHelp("Look for vfio/vfio and kvm here instead of /dev.", valueName: "dir"))
    var devRoot: String = "/dev"
    @Option(name: .long, help: ArgumentHelp("Read RELEASE/modules.dep and modules.builtin here instead of /lib/modules.", valueName: "dir"))
    var modulesRoot: String = "/lib/modules"
    @Option(name: .long, help: ArgumentHelp("Read /etc (modprobe.d, driverctl.d, udev rules), /usr/lib and /run here instead of /, for the boot-time bindings.", valueName: "dir"))
    var configRoot: String = "/"

    func run() throws {
        let planned = vmMemory.bytes
        var reader = HostReadinessReader(sysfs: global.resolvedRoot)
        reader.procRoot = procRoot
        reader.devRoot = devRoot
        reader.modulesRoot = modulesRoot
        reader.plannedGuestMemory = planned
        reader.plannedDevices = vm.vmDevices.value
        reader.plannedVIOMMU = vm.viommu
        reader.plannedPageSize = vm.vmPageSize.bytes
        let host: HostReadiness
        do { host = try reader.read(names: global.nameDatabase()) } catch { throw CommandFailure(error.description) }
        let bootPlan = BootBindingLoader.plan(configRoot: configRoot, procRoot: procRoot, rulesDirectory: nil, inventory: host.inventory)
        let findings = Doctor.examine(host) + [Doctor.bootBindings(bootPlan)]
        let verdict = Doctor.verdict(findings)
        if global.json {
            print(try JSONOutput.encode(DoctorJSON(verdict: verdict, kernel: host.kernelRelease, findings: findings)))
        } else {
            for finding in findings { Self.lines(finding).forEach { print($0) } }
            let summary: String
            switch verdict {
            case .problem: summary = "not ready: fix the [FAIL] findings first"
            case .warning: summary = "ready, with warnings"
            case .ok, .info: summary = "ready"
            }
            print("\nverdict: \(summary)")
        }
        if verdict == .problem { throw ExitCode(2) }
    }
}

extension DoctorCommand {
    /// One finding as text: a status mark and the title, then its evidence and fix, indented.
    static func lines(_ finding: Finding) -> [String] {
        let marks: [Finding.Status: String] = [.ok: "[ok]  ", .info: "[info]", .warning: "[warn]", .problem: "[FAIL]"]
        return ["\(marks[finding.status] ?? "") \(finding.title)"] + finding.evidence.map { "       \($0)" }
            + (finding.remedy.map { ["       fix: \($0)"] } ?? [])
    }
}

/// "8G", "512M", "1024" (bytes) -> bytes.
/// The VM whose DMA budget `doctor` and `dma check` judge, beside its RAM.
struct VMShapeOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Devices the VM is given, for its DMA budget (memlock, mappings).", valueName: "n"))
    var vmDevices = VMDeviceCount(1)
    @Flag(name: .long, help: "The VM has a vIOMMU (each device pins all guest RAM; the guest maps pages one by one).")
    var viommu = false
    @Option(name: .long, help: ArgumentHelp("Page the guest maps for DMA with a vIOMMU.", valueName: "4K|2M|1G"))
    var vmPageSize: DMAPageSize = .small
}

enum DMAPageSize: String, ExpressibleByArgument, CaseIterable {
    case small = "4K", large = "2M", huge = "1G"
    var bytes: UInt64 {
        switch self {
        case .small: 4096
        case .large: 2 << 20
        case .huge: 1 << 30
        }
    }
}


struct DoctorJSON: Encodable {
    let verdict: Finding.Status
    let kernel: String?
    let findings: [Finding]
    enum Keys: String, CodingKey { case verdict, kernel, findings }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(verdict.rawValue, forKey: .verdict)
        try container.encode(kernel, forKey: .kernel)
        try container.encode(findings.map(JSONValue.finding), forKey: .findings)
    }
}

extension JSONValue {
    /// A finding in JSON: `{id, status, title, evidence, remedy}` (doctor, vm config).
    static func finding(_ finding: Finding) -> JSONValue {
        .object([("id", .string(finding.id)), ("status", .string(finding.status.rawValue)), ("title", .string(finding.title)),
                 ("evidence", .array(finding.evidence.map(JSONValue.string))), ("remedy", .optional(finding.remedy))])
    }
}
