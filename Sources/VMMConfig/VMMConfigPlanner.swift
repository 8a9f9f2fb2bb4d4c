import Diagnostics
import GuestMMIOWindow
import HostKernel
import PCIInventory
import TextFormat
import VFIO

/// What `vfioctl vm config` is asked for: which devices go to the VM and how much RAM it has.
public struct VMMConfigRequest: Sendable, Equatable {
    /// The device alone, every function of its slot, or every endpoint of its IOMMU group.
    public enum Scope: String, Sendable, CaseIterable { case device, slot, group }

    /// The first device named (the one `romFile` is for).
    public var address: PCIAddress
    /// Further devices for the same VM, each taken with the same scope.
    public var moreAddresses: [PCIAddress] = []
    /// Every device named, in the order given.
    public var addresses: [PCIAddress] { [address] + moreAddresses }
    public var scope: Scope
    public var guestMemory: UInt64
    /// An option ROM image to give the guest instead of the device's own (the named device only).
    public var romFile: String?
    /// The guest slot (on the guest's root bus) of the first host slot in slot and group scope;
    /// further host slots take the next ones.
    public var firstGuestSlot: UInt8

    public static let defaultFirstGuestSlot: UInt8 = 0x10
    /// How the VMM opens the devices: type1 (group and container), iommufd (device file and
    /// /dev/iommu), or auto (iommufd where the host and every device have it, as the library does).
    public var backend: VFIOBackendRequest = .auto
    /// Whether QEMU's form (or libvirt's, which runs QEMU) is wanted: only then does the host's
    /// QEMU version decide anything (an iommufd form for a QEMU before 8.2 is refused).
    public var includesQEMU = true

    public init(address: PCIAddress, scope: Scope = .device, guestMemory: UInt64 = 8 << 30, romFile: String? = nil,
                firstGuestSlot: UInt8 = Self.defaultFirstGuestSlot) {
        self.address = address
        self.scope = scope
        self.guestMemory = guestMemory
        self.romFile = romFile
        self.firstGuestSlot = firstGuestSlot
    }
}

/// How a device's expansion ROM reaches the guest.
public enum ROMSetting: Sendable, Equatable {
    /// The device's own ROM, as the VMM exposes it by default.
    case device
    /// No ROM BAR in the guest (QEMU rombar=0, libvirt <rom bar='off'/>), and why.
    case off(reason: String)
    /// This image instead (QEMU romfile=, libvirt <rom file=...>).
    case file(String)
}

/// One device as the VM gets it.
public struct VMMDevicePlan: Sendable, Equatable {
    public let address: PCIAddress
    /// Where it sits in the guest: nil lets the VMM choose (a lone device).
    public let guestSlot: UInt8?
    public let guestFunction: UInt8
    /// Function 0 of a guest slot that holds more than one function.
    public let multifunction: Bool
    public let rom: ROMSetting
    /// The host's boot display (boot_vga=1): the guest gets its legacy VGA ranges (QEMU x-vga=on)
    /// and no emulated display.
    public let primaryDisplay: Bool
    /// The device's VFIO device file (vfioN in /dev/vfio/devices), where the kernel made one.
    public var deviceFile: String? = nil
}

/// What `vfioctl vm config` prints, decided from sysfs facts alone. Render it with
/// `qemuArguments`, `libvirtDevices`/`libvirtDomain` and `cloudHypervisorArguments`.
public struct VMMConfigPlan: Sendable {
    public let request: VMMConfigRequest
    /// The IOMMU group of the first device named.
    public let group: Int
    /// Every IOMMU group the VM's devices are in, ascending.
    public let groups: [Int]
    public let devices: [VMMDevicePlan]
    /// Members of the group that stay with the host (bridges), and why.
    public let leftOnHost: [(address: PCIAddress, reason: String)]
    /// The doctor's memory rules for this VM's RAM: memlock and huge pages.
    public let host: [Finding]
    /// Free huge pages are reserved (the doctor's huge-page finding is ok): back guest RAM with them.
    public let hugePages: Bool
    /// Things to know that are not options: ROM caveats, VMM limits.
    public let notes: [String]
    /// The guest's 64-bit MMIO window for these devices (nil: no 64-bit prefetchable BAR); its
    /// settings join each VMM's (the doctor's `vm.mmio-window` finding is in `host`).
    public var mmioWindow: MMIOWindowPlan?
    /// The backend the printed settings use (the request's, with auto resolved).
    public var backend: VFIOBackend = .type1
    /// Why the iommufd form cannot be given for these devices on this host (nil: it can).
    public var iommufdUnavailable: String?
}

/// Why no configuration was printed; `bindFirst` are the commands that fix it.
public struct VMMConfigRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public let reason: String
    public let bindFirst: [String]

    public var description: String {
        ([reason] + bindFirst.map { "bind first: \($0)" }).joined(separator: "\n")
    }
}

/// The planner: pure, from the inventory and host facts `HostReadinessReader` gathered.
public enum VMMConfigPlanner {
    public static func plan(_ request: VMMConfigRequest, host readiness: HostReadiness) throws(VMMConfigRefusal) -> VMMConfigPlan {
        let inventory = readiness.inventory
        // Each named device with its scope; a device named twice, or already taken in with an
        // earlier one's slot or group, is counted once and said once.
        var selected: [PCIDevice] = []
        var takenWith: [PCIAddress: PCIAddress] = [:]
        var groupOfFirst: Int?
        var leftOnHost: [(address: PCIAddress, reason: String)] = []
        var notes: [String] = []
        for address in request.addresses {
            guard let device = inventory.device(address) else {
                throw VMMConfigRefusal(reason: "no PCI device \(address); run `vfioctl list` to see the devices", bindFirst: [])
            }
            guard let groupID = device.iommuGroup, let group = inventory.group(groupID) else {
                throw VMMConfigRefusal(reason: "\(device.address) is in no IOMMU group: VFIO cannot assign it (run `vfioctl doctor`)", bindFirst: [])
            }
            guard !device.isBridge else {
                throw VMMConfigRefusal(reason: "\(device.address) is a bridge: bridges stay with the host; name an endpoint behind it", bindFirst: [])
            }
            if groupOfFirst == nil { groupOfFirst = groupID }
            if let first = takenWith[address] {
                notes.append(first == address ? "\(address) is named more than once: counted once"
                             : "\(address) is already in the VM with \(first) (--\(request.scope.rawValue)): counted once")
                continue
            }
            for member in selection(request.scope, of: device, group: group, in: inventory) where takenWith[member.address] == nil {
                takenWith[member.address] = address
                selected.append(member)
            }
            if request.scope == .group {
                leftOnHost += group.devices.compactMap { inventory.device($0) }.filter(\.isBridge)
                    .filter { bridge in !leftOnHost.contains { $0.address == bridge.address } }
                    .map { (address: $0.address, reason: "bridge (\($0.driver ?? "no driver")): stays with the host") }
            }
        }
        guard let groupID = groupOfFirst else {
            throw VMMConfigRefusal(reason: "no device named", bindFirst: [])
        }
        notes = unique(notes)

        // Every group the selection touches must be viable, or VFIO will not open any of it.
        let groupIDs = Set(selected.compactMap(\.iommuGroup)).sorted()
        let groups = groupIDs.compactMap { inventory.group($0) }
        let blockers = groups.flatMap(\.blockers)
        if !blockers.isEmpty {
            let commands = blockers.compactMap { blocker -> String? in
                guard let address = try? PCIAddress(parsing: blocker.address), let member = inventory.device(address) else { return nil }
                return Doctor.bindCommand(for: member, in: inventory)
            }
            throw VMMConfigRefusal(
                reason: "IOMMU group\(groups.count == 1 ? "" : "s") \(groupIDs.map(String.init).joined(separator: ", ")) not viable: "
                    + blockers.map { "\($0.address) \($0.reason)" }.joined(separator: "; "),
                bindFirst: unique(commands))
        }
        // A viable group may still hold members on no driver or pci-stub: a VMM opens only
        // what vfio-pci (or a variant) drives.
        let notOnVFIO = selected.filter { !$0.isOnVFIO }
        if !notOnVFIO.isEmpty {
            throw VMMConfigRefusal(
                reason: notOnVFIO.map { "\($0.address) is \($0.driver.map { "bound to \($0)" } ?? "bound to no driver"), not vfio-pci" }
                    .joined(separator: "; ") + ": a VMM opens devices through vfio-pci",
                bindFirst: unique(notOnVFIO.map { Doctor.bindCommand(for: $0, in: inventory) }))
        }

        // Without the resource file a missing ROM is unknown, not absent: rombar=0 would be a guess.
        if let unknown = selected.first(where: { $0.resourceFileUnreadable && !($0.address == request.address && request.romFile != nil) }) {
            throw VMMConfigRefusal(reason: "cannot read the resource file of \(unknown.address): whether it has an expansion ROM (and its BARs) is unknown; run as root or check sysfs, or give --rom-file", bindFirst: [])
        }
        let placed = try place(selected, request: request)
        let devices = placed.map { item in
            let member = item.device
            let rom: ROMSetting
            if member.address == request.address, let file = request.romFile {
                rom = .file(file)
            } else if let bar = member.rom, bar.size > 0 {
                rom = .device
            } else {
                rom = .off(reason: "no expansion ROM in sysfs")
            }
            let primary = member.bootVGA == true
            if primary, rom == .device {
                notes.append("\(member.address) is the host's boot display: the ROM the kernel shows may be its shadowed copy; if the guest shows nothing, give a clean dump with --rom-file")
            }
            return VMMDevicePlan(address: member.address, guestSlot: item.slot, guestFunction: item.function,
                                 multifunction: item.multifunction, rom: rom, primaryDisplay: primary,
                                 deviceFile: member.vfioDeviceFile)
        }
        let choice = try HandOffBackend.choose(request.backend, devices: selected, hasIOMMUFD: readiness.iommufdNode,
                                               qemuVersion: request.includesQEMU ? readiness.qemuVersion : nil)
        let backend = choice.backend, iommufdUnavailable = choice.iommufdUnavailable
        notes += backendNotes(backend, devices: selected, host: readiness, iommufdUnavailable: iommufdUnavailable,
                              requested: request.backend)
        if devices.contains(where: \.primaryDisplay) {
            notes.append("x-vga=on needs a host kernel built with CONFIG_VFIO_PCI_VGA")
        }
        // The host's checks for the whole VM: its RAM once, and every device it gets.
        var sized = readiness
        sized.plannedGuestMemory = request.guestMemory
        sized.plannedDevices = devices.count
        let assigned = placed.map(\.device)
        let host = Doctor.memory(sized) + Doctor.mmioWindow(devices: assigned, guestMemory: request.guestMemory,
                                                             hostAddressBits: readiness.physicalAddressBits)
        let hugePages = host.contains { $0.id == "memory.hugepages" && $0.status == .ok }
        var plan = VMMConfigPlan(request: request, group: groupID, groups: groupIDs, devices: devices, leftOnHost: leftOnHost,
                                 host: host, hugePages: hugePages, notes: notes)
        plan.mmioWindow = Doctor.mmioWindowPlan(devices: assigned, guestMemory: request.guestMemory,
                                                hostAddressBits: readiness.physicalAddressBits)
        plan.backend = backend
        plan.iommufdUnavailable = iommufdUnavailable
        return plan
    }

    /// What the chosen form needs, for stderr: QEMU's version, how pinned RAM is charged, and
    /// peer-to-peer through dma-bufs from Linux 6.19.
    static func backendNotes(_ backend: VFIOBackend, devices: [PCIDevice], host: HostReadiness, iommufdUnavailable: String?,
                             requested: VFIOBackendRequest) -> [String] {
        switch backend {
        case .type1:
            guard requested == .auto, host.iommufdNode, let why = iommufdUnavailable else { return [] }
            return ["auto took type1: \(why)"]
        case .iommufd:
            let qemu = HandOffBackend.qemuIOMMUFDVersion
            var notes = ["the iommufd form needs QEMU \(qemu.major).\(qemu.minor) or later (-object iommufd, vfio-pci iommufd=)"
                         + (host.qemuVersion.map { "; the host's QEMU is \($0)" } ?? ""),
                         "under iommufd, pinned guest RAM counts against the RLIMIT_MEMLOCK of the VMM's user (all its iommufd pins together), not only the process's: raise it for that user or give the VMM CAP_IPC_LOCK",
                         "libvirt's iommufd form (<driver iommufd='yes'/>) is untested here: the newest libvirt in Debian's archive (11.3) predates it; libvirt 12.2 and later document it"]
            if devices.count > 1 {
                let dmabuf = KernelHistory.versionFacts.first { $0.id == "linux.dmabuf-p2p" }?.version ?? KernelVersion(6, 19)
                let kernel = host.kernelRelease.flatMap { KernelVersion(release: $0) }
                if kernel.map({ $0 < dmabuf }) ?? true {
                    notes.append("peer-to-peer DMA between these devices under iommufd needs Linux \(dmabuf.major).\(dmabuf.minor) (BARs exported as dma-bufs, CONFIG_VFIO_PCI_DMABUF)"
                                 + (host.kernelRelease.map { "; this kernel is \($0)" } ?? ""))
                }
            }
            return notes
        }
    }

    /// The endpoints the scope names, in address order.
    static func selection(_ scope: VMMConfigRequest.Scope, of device: PCIDevice, group: IOMMUGroup, in inventory: PCIInventory) -> [PCIDevice] {
        switch scope {
        case .device:
            return [device]
        case .slot:
            return inventory.devices.filter { sameSlot($0.address, device.address) && !$0.isBridge }
        case .group:
            return group.devices.compactMap { inventory.device($0) }.filter { !$0.isBridge }
        }
    }

    static func sameSlot(_ a: PCIAddress, _ b: PCIAddress) -> Bool {
        a.domain == b.domain && a.bus == b.bus && a.device == b.device
    }

    /// Guest addresses: devices in device scope are left to the VMM (which gives each its own
    /// free slot); otherwise each host
    /// slot gets its own guest slot from `firstGuestSlot` on, its functions numbered from 0 in
    /// address order (a guest looks for functions only behind function 0), and function 0 is
    /// marked multifunction when the slot has more than one.
    static func place(_ devices: [PCIDevice], request: VMMConfigRequest)
        throws(VMMConfigRefusal) -> [(device: PCIDevice, slot: UInt8?, function: UInt8, multifunction: Bool)] {
        if request.scope == .device {
            return devices.map { ($0, nil, 0, false) }
        }
        // Slots are assigned across every named device's selection at once, so none clash.
        var slots: [[PCIDevice]] = []
        for device in devices.sorted(by: { $0.address < $1.address }) {
            if let last = slots.last?.last, sameSlot(last.address, device.address) {
                slots[slots.count - 1].append(device)
            } else {
                slots.append([device])
            }
        }
        var placed: [(device: PCIDevice, slot: UInt8?, function: UInt8, multifunction: Bool)] = []
        for (index, functions) in slots.enumerated() {
            // Guest slots are 0x00-0x1f; the count of host slots is small but comes from sysfs.
            let (slot, overflow) = Int(request.firstGuestSlot).addingReportingOverflow(index)
            guard !overflow, slot <= 0x1f, functions.count <= 8 else {
                // Slot 0 is the host bridge's: 31 guest slots at most, from 0x01.
                let highestFirst = 0x20 - slots.count
                throw VMMConfigRefusal(reason: highestFirst >= 1
                    ? "\(slots.count) slots do not fit in guest slots from \(request.firstGuestSlot.hex()) to 0x1f; choose --guest-slot \(UInt8(highestFirst).hex()) or lower"
                    : "\(slots.count) host slots are more than the 31 guest slots (0x01-0x1f) of one PCI bus; pass fewer devices", bindFirst: [])
            }
            for (function, device) in functions.enumerated() {
                placed.append((device, UInt8(slot), UInt8(function), function == 0 && functions.count > 1))
            }
        }
        return placed
    }

    static func unique(_ items: [String]) -> [String] {
        var seen: Set<String> = []
        return items.filter { seen.insert($0).inserted }
    }
}
