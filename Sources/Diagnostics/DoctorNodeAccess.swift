import VFIO

/// The owner and mode of one VFIO or iommufd node, as `doctor` judges who can open it.
public struct DeviceNodeAccess: Sendable, Equatable {
    /// The node's path (/dev/vfio/12, /dev/vfio/devices/vfio0, /dev/iommu, /dev/vfio/vfio).
    public var path: String
    /// The owner's user id.
    public var uid: UInt32
    /// The node's group id.
    public var gid: UInt32
    /// The owner's name where the host has one (nil: an id with no name).
    public var userName: String?
    /// The group's name where the host has one.
    public var groupName: String?
    /// The permission bits (st_mode & 07777).
    public var mode: UInt32
    /// The VFIO container (/dev/vfio/vfio): 0666 by the kernel's design, harmless alone.
    public var isContainer: Bool

    /// A node as read.
    public init(path: String, uid: UInt32, gid: UInt32, userName: String?, groupName: String?, mode: UInt32, isContainer: Bool) {
        self.path = path
        self.uid = uid
        self.gid = gid
        self.userName = userName
        self.groupName = groupName
        self.mode = mode
        self.isContainer = isContainer
    }

    var owner: String { "\(userName ?? String(uid)):\(groupName ?? String(gid))" }
    var modeText: String { "0" + String(mode, radix: 8) }

    /// Who besides its owner can open it: every user (world bits), the members of a group other
    /// than root's (group bits; the kernel makes /dev/iommu 0660 root:root), or nobody.
    var exposure: String? {
        if mode & 0o006 != 0 { return "every local user can open it" }
        if mode & 0o060 != 0 && gid != 0 { return "every member of group \(groupName ?? String(gid)) can open it" }
        return nil
    }
}

extension Doctor {
    /// Who can open the VFIO nodes: a group node, device file or /dev/iommu that more than one
    /// user can open gives the device (or IOMMU mappings) to all of them; a node given to one
    /// user (`bind --owner`) means a VMM runs as that user, who needs the memlock limit for the
    /// VM's pinned RAM.
    static func nodeAccess(_ host: HostReadiness) -> [Finding] {
        guard !host.deviceNodes.isEmpty else { return [] }
        var findings: [Finding] = []
        let exposed = host.deviceNodes.filter { !$0.isContainer && $0.exposure != nil }
        if exposed.isEmpty {
            let containers = host.deviceNodes.filter(\.isContainer).map { "\($0.path) \($0.modeText) \($0.owner): the kernel's mode; alone it opens no device" }
            findings.append(Finding(id: "vfio.node-access", status: .ok, title: "VFIO nodes open to their owner only",
                                    evidence: host.deviceNodes.filter { !$0.isContainer }.map { "\($0.path) \($0.modeText) \($0.owner)" } + containers))
        } else {
            findings.append(Finding(
                id: "vfio.node-access", status: .warning, title: "VFIO nodes that more than one user can open",
                evidence: exposed.map { "\($0.path) \($0.modeText) \($0.owner): \($0.exposure ?? "")" }
                    + ["a user who opens a group node or device file can drive the device and DMA into whatever it maps"],
                remedy: "give each to the VMM's user only: `vfioctl bind ADDRESS --owner USER` (mode 0600; `persist add --owner USER` at boot), or `chmod 0600` it; remove the udev rule or `chmod 666` that opened it"))
        }
        // A VMM's user: every non-root owner of a group node or device file.
        let budget = VMDMABudget(.init(guestMemory: host.plannedGuestMemory, devices: host.plannedDevices, vIOMMU: host.plannedVIOMMU,
                                       pageSize: host.plannedPageSize, memlockLimit: nil, dmaEntryLimit: nil, addressWidth: nil))
        let needed = budget.memlockNeeded.map(bytes) ?? "more than 16 EiB"
        let kibibytes = budget.memlockNeeded.map { String(($0 + 1023) / 1024) } ?? "unlimited"
        var owners: [String: [String]] = [:]
        for node in host.deviceNodes where !node.isContainer && node.uid != 0 {
            owners[node.userName ?? String(node.uid), default: []].append(node.path)
        }
        for (user, paths) in owners.sorted(by: { $0.key < $1.key }) {
            findings.append(Finding(
                id: "vfio.vmm-user.\(user)", status: .info, title: "A VMM run as \(user) opens \(paths.joined(separator: " "))",
                evidence: ["\(user) owns \(paths.joined(separator: ", "))",
                           "a VM with \(bytes(host.plannedGuestMemory)) of RAM pins all of it: \(user)'s RLIMIT_MEMLOCK must be at least \(needed) (libvirt's rule: RAM + 1 GiB; `doctor --vm-memory` sizes it)"],
                remedy: "give \(user) that limit where the VMM starts: LimitMEMLOCK=\(budget.memlockNeeded.map(String.init) ?? "infinity") in its systemd unit, or `\(user) hard memlock \(kibibytes)` and `\(user) soft memlock \(kibibytes)` in /etc/security/limits.d/vfioctl.conf"))
        }
        return findings
    }
}
