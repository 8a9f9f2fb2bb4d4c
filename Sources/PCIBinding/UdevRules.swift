import Foundation
import PCIInventory
import SystemCalls
#if canImport(Glibc)
import Glibc
#endif

/// Persistent vfio-pci bindings as udev rules, one file per device, keyed on the address.
public struct UdevRules {
    /// Where udev reads local rules.
    public static let defaultDirectory = "/etc/udev/rules.d"
    /// The template also shipped as udev/90-vfioctl-device.rules.in (a test keeps them equal).
    public static let template = """
        # vfioctl persist: bind @ADDRESS@ to vfio-pci at boot and on hot-plug.
        # Keyed on the PCI address, never on vendor:device (which would also take every other device of
        # the same model). Remove with `vfioctl persist remove @ADDRESS@`.
        ACTION=="add", SUBSYSTEM=="pci", KERNEL=="@ADDRESS@", ATTR{driver_override}="vfio-pci", RUN+="/bin/sh -c 'modprobe -q vfio-pci; if [ -e /sys/bus/pci/devices/$kernel/driver ]; then echo $kernel > /sys/bus/pci/devices/$kernel/driver/unbind; fi; echo $kernel > /sys/bus/pci/drivers_probe'"

        """
    static let marker = "# vfioctl persist: bind "

    /// The rules directory.
    public let directory: String

    /// Rules in `directory`.
    public init(directory: String = UdevRules.defaultDirectory) { self.directory = directory }

    /// The rule file for `address`.
    public func path(for address: PCIAddress) -> String {
        directory + "/90-vfioctl-\(address).rules"
    }

    /// The rule for `address`: the template with the address filled in.
    public func ruleText(for address: PCIAddress) -> String {
        Self.template.replacingOccurrences(of: "@ADDRESS@", with: address.description)
    }

    /// The rule for `address` whose VFIO nodes go to `owner` only (mode 0600): the group node
    /// matched through the group's membership (`/sys/kernel/iommu_groups/N/devices/ADDRESS`),
    /// never a group number, which can change between boots; the device file through its
    /// parent, the device. Without an owner, the nodes stay the kernel's (root, 0600).
    public func ruleText(for address: PCIAddress, owner: NodeOwner?) -> String {
        guard let owner else { return ruleText(for: address) }
        // Names were checked (`NodeOwner.nameProblem`): no quote or newline can reach the rule.
        let assign = "OWNER=\"\(owner.user)\", GROUP=\"\(owner.group)\", MODE=\"0600\""
        return ruleText(for: address) + """
            # Its VFIO nodes for \(owner) only (vfioctl persist add --owner), mode 0600.
            SUBSYSTEM=="vfio", KERNEL=="[0-9]*", TEST=="/sys/kernel/iommu_groups/%k/devices/\(address)", \(assign)
            SUBSYSTEM=="vfio-dev", KERNELS=="\(address)", \(assign)

            """
    }

    /// Writes the rule; returns false when an identical rule was already there.
    @discardableResult
    public func add(_ address: PCIAddress, owner: NodeOwner? = nil) throws(BindingError) -> Bool {
        try write(ruleText(for: address, owner: owner), to: path(for: address))
    }

    /// Every vfioctl rule file begins with this (the device rules and the SR-IOV ones).
    static let ownPrefix = "# vfioctl persist: "

    /// The text of the rule file at `path`: nil when there is none; throws when something is
    /// there that is not a rule file of vfioctl's (another's rule, a symlink, a FIFO...), which
    /// is never overwritten or deleted.
    func ownRule(at path: String) throws(BindingError) -> String? {
        guard !SafeFile.isAbsent(path) else { return nil }
        let text: String
        do { text = String(decoding: try SafeFile.read(path, limit: 1 << 16, followFinalLink: false), as: UTF8.self) } catch {
            throw .sysfsWrite(path: path, value: "udev rule", reason: "\(error.reason); vfioctl leaves it alone: move it away")
        }
        guard text.hasPrefix(Self.ownPrefix) else {
            throw .sysfsWrite(path: path, value: "udev rule", reason: "the file exists and is not vfioctl's (no \"\(Self.ownPrefix)\" first line); move it away or merge it by hand")
        }
        return text
    }

    /// Writes one rule file (a new file, or one of ours replaced atomically); false when it
    /// already says `text`.
    func write(_ text: String, to path: String) throws(BindingError) -> Bool {
        if try ownRule(at: path) == text { return false }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .sysfsWrite(path: directory, value: "udev rules directory", reason: "cannot create it: \((error as NSError).localizedFailureReason ?? error.localizedDescription)")
        }
        do { try SafeFile.writeAtomically(Array(text.utf8), to: path, mode: 0o644) } catch {
            throw .sysfsWrite(path: path, value: "udev rule", reason: error.reason)
        }
        return true
    }

    /// Deletes one rule file of ours; false when there was none.
    func delete(_ path: String) throws(BindingError) -> Bool {
        guard try ownRule(at: path) != nil else { return false }
        guard unlink(path) == 0 || errno == ENOENT else {
            throw .sysfsWrite(path: path, value: "(delete)", reason: String(cString: strerror(errno)))
        }
        return true
    }

    /// Deletes the rule; returns false when there was none.
    @discardableResult
    public func remove(_ address: PCIAddress) throws(BindingError) -> Bool {
        try delete(path(for: address))
    }

    /// Addresses with a vfioctl rule in the directory (files without the marker are not ours).
    public func list() -> [PCIAddress] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix("90-vfioctl-") && $0.hasSuffix(".rules") }.compactMap { name in
            guard let text = try? String(contentsOfFile: directory + "/" + name, encoding: .utf8),
                  text.hasPrefix(Self.marker) else { return nil }
            let address = name.dropFirst("90-vfioctl-".count).dropLast(".rules".count)
            return try? PCIAddress(parsing: String(address))
        }.sorted()
    }

    // MARK: SR-IOV: the VF count a PF gets back at boot

    /// The rule file that gives a PF its VF count back when its driver binds.
    public func sriovPath(for address: PCIAddress) -> String {
        directory + "/90-vfioctl-sriov-\(address).rules"
    }

    /// Sets the VF count when the PF's driver binds (the count can be written only then), with
    /// autoprobe off so no host driver takes the VFs before their own address-keyed rules.
    public func sriovRuleText(for address: PCIAddress, count: Int) -> String {
        """
        # vfioctl persist: restore \(count) VFs of \(address) when its driver binds (its VFs have rules of their own).
        # Remove with `vfioctl sriov \(address) --vfs 0 --persist` or `vfioctl persist remove \(address)`.
        ACTION=="bind", SUBSYSTEM=="pci", KERNEL=="\(address)", ATTR{sriov_drivers_autoprobe}="0", ATTR{sriov_numvfs}="\(count)"

        """
    }

    /// Writes the PF's VF-count rule; returns false when an identical one was there.
    @discardableResult
    public func addSRIOV(_ address: PCIAddress, count: Int) throws(BindingError) -> Bool {
        try write(sriovRuleText(for: address, count: count), to: sriovPath(for: address))
    }

    /// Deletes the PF's VF-count rule; returns false when there was none.
    @discardableResult
    public func removeSRIOV(_ address: PCIAddress) throws(BindingError) -> Bool {
        try delete(sriovPath(for: address))
    }

    /// Asks a running udevd to reread its rules; harmless when there is none.
    public static func reload() {
        guard let udevadm = findProgram(["/usr/bin/udevadm", "/bin/udevadm", "/sbin/udevadm"]) else { return }
        _ = runProgram(udevadm, ["control", "--reload"])
    }
}
