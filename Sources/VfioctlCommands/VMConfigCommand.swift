import ArgumentParser
import Diagnostics
import Foundation
import PCIInventory
import TextFormat
import VFIO
import VMMConfig

/// `vfioctl vm config BDF [--device|--slot|--group] [--vmm ...] [--memory SIZE]`: what a real
/// VMM needs to use what vfioctl bound. Reads sysfs and the host's limits, prints; changes nothing.
struct VMConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Print the QEMU, libvirt and Cloud Hypervisor settings that hand bound devices to one VM.",
        discussion: """
            For one VM's devices: each address given, alone (--device, the default), with every \
            function of its slot (--slot) or every endpoint of its IOMMU group (--group); a device \
            named twice or already in another's slot or group is counted once. Prints QEMU's \
            options (one -m and memory backing; -device vfio-pci host=; addr= and \
            multifunction=on for functions of one slot, guest slots that do not clash; x-vga=on \
            and no emulated display for the host's boot display; rombar=0 where the device has \
            no ROM, romfile= with --rom-file), libvirt's <hostdev managed='no'> elements (vfioctl \
            binds, so libvirt must not) and one <memory>, Cloud Hypervisor's --device path=, and \
            what the whole VM needs from the host for --memory of RAM (memlock, huge pages, the \
            DMA budget: the doctor's rules).

            The devices must be bound to vfio-pci and their groups viable; otherwise nothing is \
            printed, stderr says what to bind first, and the exit status is 3.

            With --vmm NAME only that VMM's settings go to stdout (one line of QEMU or Cloud \
            Hypervisor arguments, or libvirt XML), host notes to stderr.

            --backend iommufd prints the iommufd forms (QEMU 8.2+: -object iommufd,id=iommufd0 \
            and iommufd=iommufd0 on each device; libvirt's <driver iommufd='yes'/>; Cloud \
            Hypervisor's --platform iommufd=on); it is refused (exit 3, nothing on stdout) where \
            the kernel has no /dev/iommu, a device has no VFIO device file, or the host's QEMU is \
            older than 8.2. auto (the default) takes iommufd where every device can use it, and \
            refuses a mixed set. --json carries the type1 and the iommufd forms.

            Examples:
              vfioctl vm config 0000:01:00.0 --slot
              vfioctl vm config 0000:01:00.0 --group --json
              vfioctl vm config 0000:01:00.0 0000:02:00.0 --slot --memory 32G
              qemu-system-x86_64 -machine q35 ... $(vfioctl vm config 0000:00:05.0 --vmm qemu --memory 4G)
            """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: ArgumentHelp("The devices of one VM, each DDDD:BB:DD.F or BB:DD.F in hex, function 0-7.", valueName: "address"))
    var addresses: [PCIAddress] = []
    @Flag(help: "Which devices go to the VM: the device, every function of its slot, or every endpoint of its IOMMU group.")
    var scope: ConfigScope = .device
    @Option(help: ArgumentHelp("Which VMM's settings to print: qemu, libvirt, cloud-hypervisor or all.", valueName: "vmm"))
    var vmm: VMMChoice = .all
    @Option(parsing: .unconditional, help: ArgumentHelp("The VM's RAM (K, M, G, T; a whole number of MiB), for -m and the memlock and huge-page checks.", valueName: "size"))
    var memory = GuestMemorySize(bytes: 8 << 30)
    @Option(help: ArgumentHelp("An option ROM image for the device instead of its own (absolute path of letters, digits and /._+-).", valueName: "path"))
    var romFile: ROMFilePath?
    @Option(help: ArgumentHelp("Guest slot of the first host slot with --slot or --group (0x01-0x1f).", valueName: "slot"))
    var guestSlot = GuestSlotArgument(VMMConfigRequest.defaultFirstGuestSlot)
    @Option(help: ArgumentHelp("How the VMM opens the devices: auto (iommufd where /dev/iommu and every device's VFIO device file exist, else type1), type1 (host= through the group) or iommufd.", valueName: "backend"))
    var backend: VFIOBackendRequest = .auto
    @Option(name: .long, help: ArgumentHelp("Look for iommu and vfio/vfio here instead of /dev.", valueName: "dir"))
    var devRoot: String = "/dev"

    func validate() throws {
        if addresses.isEmpty { throw ValidationError("name at least one device address") }
        if romFile != nil && addresses.count > 1 { throw ValidationError("--rom-file is for one device: give it with one address") }
    }

    func run() throws {
        guard let target = addresses.first else { throw ValidationError("name at least one device address") }
        let named = addresses.map(\.description).joined(separator: " ")
        var reader = HostReadinessReader(sysfs: global.resolvedRoot)
        reader.plannedGuestMemory = memory.bytes
        reader.devRoot = devRoot
        let host: HostReadiness
        do { host = try reader.read(names: nil) } catch { throw CommandFailure(error.description) }
        // An unknown device is an error (exit 1, as everywhere), not a refusal.
        for address in addresses where host.inventory.device(address) == nil {
            throw CommandFailure("vm config: no PCI device \(address); run `vfioctl list` to see the devices")
        }
        // The VMM opens the ROM file when the VM starts: a missing, empty or special file is
        // an error now, not a guest without a ROM later.
        if let romFile {
            let rom = try ROMSource.file(romFile.path, command: "vm config --rom-file")
            if rom.bytes.isEmpty { throw CommandFailure("vm config --rom-file: \(romFile.path) is empty; give a ROM image (vfioctl rom dump)") }
        }
        var request = VMMConfigRequest(address: target, scope: scope.planScope, guestMemory: memory.bytes,
                                       romFile: romFile?.path, firstGuestSlot: guestSlot.value)
        request.moreAddresses = Array(addresses.dropFirst())
        request.backend = backend
        request.includesQEMU = global.json || vmm != .cloudHypervisor
        let plan: VMMConfigPlan
        do {
            plan = try VMMConfigPlanner.plan(request, host: host)
        } catch {
            // Nothing on stdout: a half configuration would start a VM that cannot open the device.
            warn("vm config \(named): refused: \(error.description)")
            // The same status as a refused bind: nothing done, and stderr says why.
            throw ExitCode(BindingExit.refused)
        }
        if global.json {
            // Every VMM at once: JSON readers pick their part, so --vmm does not apply.
            print(try JSONOutput.encode(VMConfigJSON(plan: plan)))
            return
        }
        let notes = plan.host.filter { $0.status != .ok }.flatMap(DoctorCommand.lines) + plan.notes.map { "note: \($0)" }
        switch vmm {
        case .qemu:
            print(plan.qemuArguments.joined(separator: " "))
        case .libvirt:
            print(plan.libvirtDevices)
        case .cloudHypervisor:
            print(plan.cloudHypervisorArguments.joined(separator: " "))
        case .all:
            for line in Self.describe(plan) { print(line) }
            return
        }
        notes.forEach(warn)
    }

    static func describe(_ plan: VMMConfigPlan) -> [String] {
        let indent = { (text: String) in text.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 } }
        let groups = plan.groups.map(String.init).joined(separator: ", ")
        var lines = ["vm config \(plan.request.addresses.map(\.description).joined(separator: " ")) (\(plan.request.scope.rawValue), IOMMU group\(plan.groups.count == 1 ? "" : "s") \(groups), \(plan.backend.rawValue)): "
                     + plan.devices.map(\.address.description).joined(separator: " ")]
        for left in plan.leftOnHost { lines.append("  \(left.address): \(left.reason)") }
        lines.append("QEMU:")
        lines.append("  " + plan.qemuArguments.joined(separator: " "))
        lines.append("libvirt, in <devices>:")
        lines += indent(plan.libvirtDevices)
        lines.append("libvirt, in <domain>:")
        lines += indent(plan.libvirtDomain)
        lines.append("Cloud Hypervisor:")
        lines.append("  " + plan.cloudHypervisorArguments.joined(separator: " "))
        lines.append("Host, for \(Doctor.bytes(plan.request.guestMemory)) of guest RAM:")
        lines += plan.host.flatMap(DoctorCommand.lines).map { "  " + $0 }
        lines += plan.notes.map { "note: \($0)" }
        return lines
    }
}

/// `vm config --json`: every VMM's settings, the host findings and the notes.
struct VMConfigJSON: Encodable {
    let plan: VMMConfigPlan

    struct Device: Encodable {
        let device: VMMDevicePlan
        enum Keys: String, CodingKey { case address, guest_address, multifunction, rom, rom_file, rom_reason, primary_display, device_file }
        func encode(to encoder: Encoder) throws {
            var item = encoder.container(keyedBy: Keys.self)
            try item.encode(device.address.description, forKey: .address)
            let guest = device.guestSlot.flatMap { try? PCIAddress(bus: 0, device: $0, function: device.guestFunction) }
            try item.encode(guest?.description, forKey: .guest_address)
            try item.encode(device.multifunction, forKey: .multifunction)
            var file: String?, reason: String?
            let rom: String
            switch device.rom {
            case .device: rom = "device"
            case .off(let why): rom = "off"; reason = why
            case .file(let path): rom = "file"; file = path
            }
            try item.encode(rom, forKey: .rom)
            try item.encode(file, forKey: .rom_file)
            try item.encode(reason, forKey: .rom_reason)
            try item.encode(device.primaryDisplay, forKey: .primary_display)
            try item.encode(device.deviceFile.map { "\(VFIODeviceFile.devicesDirectory)/\($0)" }, forKey: .device_file)
        }
    }
    /// One backend's settings for every VMM.
    struct Form: Encodable {
        let qemu: [String]
        let libvirt_devices: String
        let cloud_hypervisor: [String]
        init(_ plan: VMMConfigPlan, _ backend: VFIOBackend) {
            qemu = plan.qemuArguments(for: backend)
            libvirt_devices = plan.libvirtDevices(for: backend)
            cloud_hypervisor = plan.cloudHypervisorArguments(for: backend)
        }
    }
    struct Left: Encodable {
        let address: String
        let reason: String
    }
    enum Keys: String, CodingKey {
        case address, addresses, scope, group, groups, memory, devices, left_on_host, qemu, libvirt_devices, libvirt_domain, cloud_hypervisor, host, notes
        case backend, forms, iommufd_unavailable
    }
    enum FormKeys: String, CodingKey { case type1, iommufd }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(plan.request.address.description, forKey: .address)
        try container.encode(plan.request.scope.rawValue, forKey: .scope)
        try container.encode(plan.request.addresses.map(\.description), forKey: .addresses)
        try container.encode(plan.group, forKey: .group)
        try container.encode(plan.groups, forKey: .groups)
        try container.encode(plan.request.guestMemory, forKey: .memory)
        try container.encode(plan.devices.map(Device.init), forKey: .devices)
        try container.encode(plan.leftOnHost.map { Left(address: $0.address.description, reason: $0.reason) }, forKey: .left_on_host)
        try container.encode(plan.qemuArguments, forKey: .qemu)
        try container.encode(plan.libvirtDevices, forKey: .libvirt_devices)
        try container.encode(plan.libvirtDomain, forKey: .libvirt_domain)
        try container.encode(plan.cloudHypervisorArguments, forKey: .cloud_hypervisor)
        try container.encode(plan.host.map(JSONValue.finding), forKey: .host)
        try container.encode(plan.notes, forKey: .notes)
        try container.encode(plan.backend.rawValue, forKey: .backend)
        // Both forms: the iommufd one only where this host and these devices allow it (null
        // otherwise, with the reason).
        var forms = container.nestedContainer(keyedBy: FormKeys.self, forKey: .forms)
        try forms.encode(Form(plan, .type1), forKey: .type1)
        try forms.encode(plan.iommufdUnavailable == nil ? Form(plan, .iommufd) : nil, forKey: .iommufd)
        try container.encode(plan.iommufdUnavailable, forKey: .iommufd_unavailable)
    }
}

/// `--device` / `--slot` / `--group`.
enum ConfigScope: String, EnumerableFlag {
    case device, slot, group
    var planScope: VMMConfigRequest.Scope {
        switch self {
        case .device: .device
        case .slot: .slot
        case .group: .group
        }
    }
    static func help(for value: ConfigScope) -> ArgumentHelp? {
        switch value {
        case .device: "The device alone."
        case .slot: "Every function of the device's slot (a GPU and its audio function), at one guest slot."
        case .group: "Every endpoint of the device's IOMMU group."
        }
    }
}

enum VMMChoice: String, ExpressibleByArgument, CaseIterable {
    case qemu, libvirt, cloudHypervisor = "cloud-hypervisor", all
}

/// Guest RAM: a size (`MemorySize`, as doctor's --vm-memory) that is a whole number of MiB, as
/// VMMs want it.
struct GuestMemorySize: ExpressibleByArgument {
    let bytes: UInt64
    init(bytes: UInt64) { self.bytes = bytes }
    init?(argument: String) {
        guard let bytes = MemorySize.parse(argument), bytes % (1 << 20) == 0 else { return nil }
        self.bytes = bytes
    }
    var defaultValueDescription: String { Doctor.bytes(bytes) }
}

struct ROMFilePath: ExpressibleByArgument {
    let path: String
    init?(argument: String) {
        guard VMMConfigPlan.isSafeROMPath(argument) else { return nil }
        path = argument
    }
}

struct GuestSlotArgument: ExpressibleByArgument {
    let value: UInt8
    init(_ value: UInt8) { self.value = value }
    init?(argument: String) {
        let text = argument.lowercased()
        let parsed = text.hasPrefix("0x") ? UInt8(text.dropFirst(2), radix: 16) : UInt8(text)
        guard let parsed, (0x01...0x1f).contains(parsed) else { return nil }
        value = parsed
    }
    var defaultValueDescription: String { value.hex() }
}
