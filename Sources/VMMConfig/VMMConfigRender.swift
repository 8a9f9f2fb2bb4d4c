import PCIInventory
import TextFormat
import VFIO

/// The plan in each VMM's own words. Pure text; every value comes from the plan, whose ROM path
/// the CLI has checked to need no quoting (`VMMConfigPlan.isSafeROMPath`).
extension VMMConfigPlan {
    /// QEMU's options for the plan's backend (`qemuArguments(for:)`).
    public var qemuArguments: [String] { qemuArguments(for: backend) }

    /// QEMU's id for the one iommufd object all devices share.
    static let qemuIOMMUFDObject = "iommufd0"

    /// QEMU's options: guest RAM (on huge pages where some are reserved), one `-device vfio-pci`
    /// per device, and no emulated display when the guest gets the host's boot display. With
    /// iommufd, one `-object iommufd` first and `iommufd=` on each device (QEMU 8.2 and later).
    public func qemuArguments(for backend: VFIOBackend) -> [String] {
        var arguments = ["-m", Self.sizeText(request.guestMemory)]
        if hugePages { arguments += ["-mem-path", "/dev/hugepages", "-mem-prealloc"] }
        if backend == .iommufd { arguments += ["-object", "iommufd,id=\(Self.qemuIOMMUFDObject)"] }
        for device in devices {
            var options = ["vfio-pci", "host=\(device.address)"]
            if backend == .iommufd { options.append("iommufd=\(Self.qemuIOMMUFDObject)") }
            if let slot = device.guestSlot {
                options.append("addr=\(slot.hex()).\(device.guestFunction)")
                if device.multifunction { options.append("multifunction=on") }
            }
            if device.primaryDisplay { options.append("x-vga=on") }
            switch device.rom {
            case .device: break
            case .off: options.append("rombar=0")
            case .file(let path): options.append("romfile=\(path)")
            }
            arguments += ["-device", options.joined(separator: ",")]
        }
        if devices.contains(where: \.primaryDisplay) { arguments += ["-vga", "none", "-display", "none"] }
        return arguments + (mmioWindow?.qemuArguments ?? [])
    }

    /// libvirt's `<devices>` elements for the plan's backend (`libvirtDevices(for:)`).
    public var libvirtDevices: String { libvirtDevices(for: backend) }

    /// libvirt elements for the domain's `<devices>`: a `<hostdev managed='no'>` per device
    /// (vfioctl binds, so libvirt must not rebind), and no emulated video for a boot display.
    /// With iommufd each hostdev gets `<driver iommufd='yes'/>` (the form libvirt 12.2 and later
    /// document; not in the schema of the newest libvirt in Debian's archive).
    public func libvirtDevices(for backend: VFIOBackend) -> String {
        var lines: [String] = []
        for device in devices {
            lines.append("<hostdev mode='subsystem' type='pci' managed='no'>")
            if backend == .iommufd { lines.append("  <driver iommufd='yes'/>") }
            lines.append("  <source>")
            lines.append("    " + Self.libvirtAddress(device.address, type: nil, multifunction: false))
            lines.append("  </source>")
            switch device.rom {
            case .device: break
            case .off: lines.append("  <rom bar='off'/>")
            case .file(let path): lines.append("  <rom file='\(Self.xmlEscaped(path))'/>")
            }
            if device.primaryDisplay { lines.append("  <alias name='\(Self.libvirtAlias(device.address))'/>") }
            if let slot = device.guestSlot, let guest = try? PCIAddress(bus: 0, device: slot, function: device.guestFunction) {
                lines.append("  " + Self.libvirtAddress(guest, type: "pci", multifunction: device.multifunction))
            }
            lines.append("</hostdev>")
        }
        if devices.contains(where: \.primaryDisplay) { lines.append("<video>\n  <model type='none'/>\n</video>") }
        return lines.joined(separator: "\n")
    }

    /// libvirt elements for the `<domain>` itself: its RAM, huge pages, and QEMU's x-vga for a
    /// boot display (libvirt has no attribute for it; `qemu:override` sets the property on the
    /// hostdev by its alias, and needs xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0').
    public var libvirtDomain: String {
        var lines = ["<memory unit='KiB'>\(request.guestMemory / 1024)</memory>"]
        if hugePages { lines.append("<memoryBacking>\n  <hugepages/>\n</memoryBacking>") }
        let displays = devices.filter(\.primaryDisplay)
        if !displays.isEmpty {
            lines.append("<qemu:override>")
            for device in displays {
                lines.append("  <qemu:device alias='\(Self.libvirtAlias(device.address))'>")
                lines.append("    <qemu:frontend>")
                lines.append("      <qemu:property name='x-vga' type='bool' value='true'/>")
                lines.append("    </qemu:frontend>")
                lines.append("  </qemu:device>")
            }
            lines.append("</qemu:override>")
        }
        if let window = mmioWindow?.libvirtElements, !window.isEmpty { lines.append(window) }
        return lines.joined(separator: "\n")
    }

    /// Cloud Hypervisor's options for the plan's backend (`cloudHypervisorArguments(for:)`).
    public var cloudHypervisorArguments: [String] { cloudHypervisorArguments(for: backend) }

    /// Cloud Hypervisor's options: RAM and one `path=` per device (it has no option ROM or legacy
    /// VGA support, so ROM and display settings have no equivalent there); with iommufd, its
    /// platform setting `--platform iommufd=on`.
    public func cloudHypervisorArguments(for backend: VFIOBackend) -> [String] {
        ["--memory", "size=\(Self.sizeText(request.guestMemory))" + (hugePages ? ",hugepages=on" : "")]
            + (backend == .iommufd ? ["--platform", "iommufd=on"] : [])
            + ["--device"] + devices.map { "path=/sys/bus/pci/devices/\($0.address)/" }
            + (mmioWindow?.cloudHypervisorArguments ?? [])
    }

    /// Whether a ROM path can go into QEMU's comma-separated options, libvirt's XML and a shell
    /// line as it is: an absolute path of letters, digits and `/._+-`.
    public static func isSafeROMPath(_ path: String) -> Bool {
        path.hasPrefix("/") && path.count <= 4096 && !path.split(separator: "/").contains("..")
            && path.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "/._+-".unicodeScalars.contains($0)) }
    }

    /// A size with the largest binary suffix that divides it (QEMU and Cloud Hypervisor read
    /// K, M, G, T as powers of 1024; QEMU reads a bare number as MiB, so bytes get a B).
    static func sizeText(_ bytes: UInt64) -> String { byteCountSuffixed(bytes) }

    static func libvirtAddress(_ address: PCIAddress, type: String?, multifunction: Bool) -> String {
        return "<address" + (type.map { " type='\($0)'" } ?? "")
            + " domain='\(address.domain.hex(digits: 4))' bus='\(address.bus.hex(digits: 2))' slot='\(address.device.hex(digits: 2))' function='\(address.function.hex(digits: 1))'"
            + (multifunction ? " multifunction='on'" : "") + "/>"
    }

    /// User aliases must start with "ua-" and use [a-zA-Z0-9_-.].
    static func libvirtAlias(_ address: PCIAddress) -> String {
        "ua-vfioctl-" + address.description.map { $0 == ":" ? "-" : $0 }.map(String.init).joined()
    }

    static func xmlEscaped(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "'": out += "&apos;"
            case "\"": out += "&quot;"
            default: out.append(character)
            }
        }
        return out
    }
}
