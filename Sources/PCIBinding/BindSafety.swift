import PCIInventory

/// Why a device must not be taken from its driver without `--force`, with the evidence.
public struct Refusal: Sendable, Equatable, CustomStringConvertible {
    /// What the device is busy with.
    public enum Kind: String, Sendable {
        case bridge
        case mountedFilesystem = "mounted-filesystem"
        case activeSwap = "active-swap"
        case networkInUse = "network-in-use"
        case bootDisplay = "boot-display"
        case framebufferConsole = "framebuffer-console"
        case held
        /// The mount table could not be read, so no mounted filesystem can be ruled out.
        case mountsUnknown = "mounts-unknown"
    }

    /// The kind of use found.
    public let kind: Kind
    /// What was found, in words a user can check.
    public let evidence: String

    /// The evidence.
    public var description: String { evidence }
}

/// The safety rules for taking a device away from its host driver. Pure: it judges a device
/// against `HostFacts`, touching nothing.
public enum BindSafety {
    /// Every reason the device must be left alone, empty when it is safe to bind.
    public static func refusals(for device: PCIDevice, facts: HostFacts) -> [Refusal] {
        var refusals: [Refusal] = []
        let address = device.address
        if device.isBridge {
            refusals.append(Refusal(kind: .bridge, evidence: "\(address) is a PCI bridge; VFIO assigns the devices below a bridge, not the bridge (bind those, or use --group)"))
        } else if device.isHostBridge {
            refusals.append(Refusal(kind: .bridge, evidence: "\(address) is a host bridge (the CPU's link to PCI); it cannot be assigned to a VM"))
        }
        if let reason = facts.mountsUnreadable {
            refusals.append(Refusal(kind: .mountsUnknown, evidence: "cannot read the mount table (\(reason)): it is the evidence that \(address) holds no mounted filesystem, such as the root disk; check that /proc is mounted and readable, or pass --force"))
        }
        for mount in facts.mounts where mount.pciDevices.contains(address) {
            let what = mount.mountPoint == "/" ? "the root filesystem" : "a mounted filesystem"
            refusals.append(Refusal(kind: .mountedFilesystem, evidence: "\(address) carries \(what): \(mount.source) (\(mount.blockDevice)) on \(mount.mountPoint)"))
        }
        for swap in facts.swaps where swap.pciDevices.contains(address) {
            refusals.append(Refusal(kind: .activeSwap, evidence: "\(address) carries active swap \(swap.path)"))
        }
        for interface in facts.interfaces where interface.pciDevice == address && interface.isUp {
            guard !interface.addresses.isEmpty || !interface.routes.isEmpty else { continue }
            var parts: [String] = []
            if !interface.addresses.isEmpty { parts.append("address " + interface.addresses.joined(separator: ", ")) }
            if !interface.routes.isEmpty { parts.append("routes " + interface.routes.joined(separator: ", ")) }
            refusals.append(Refusal(kind: .networkInUse, evidence: "\(address) has network interface \(interface.name) up with \(parts.joined(separator: "; "))"))
        }
        if device.bootVGA == true {
            refusals.append(Refusal(kind: .bootDisplay, evidence: "\(address) is the boot display (boot_vga=1)"))
        }
        for framebuffer in facts.framebuffers where framebuffer.pciDevice == address {
            let console = facts.framebufferConsoleActive ? " with the framebuffer console bound to it" : ""
            refusals.append(Refusal(kind: .framebufferConsole, evidence: "\(address) drives framebuffer \(framebuffer.name) (\(framebuffer.driverName))\(console)"))
        }
        if let holders = facts.holders[address], !holders.isEmpty {
            refusals.append(Refusal(kind: .held, evidence: HolderMatcher.evidence(address, holders: holders)))
        }
        return refusals
    }
}
