import Testing
@testable import Diagnostics
@testable import PCIInventory

/// doctor's `vfio.node-access` and `vfio.vmm-user.*`: who can open the VFIO nodes, and the
/// memlock a VMM's user needs.
@Suite struct DoctorNodeAccessTests {
    static func node(_ path: String, uid: UInt32 = 0, gid: UInt32 = 0, user: String? = "root", group: String? = "root",
                     mode: UInt32 = 0o600, container: Bool = false) -> DeviceNodeAccess {
        DeviceNodeAccess(path: path, uid: uid, gid: gid, userName: user, groupName: group, mode: mode, isContainer: container)
    }

    static func host(_ nodes: [DeviceNodeAccess]) throws -> HostReadiness {
        var host = try DoctorHost.workstation()
        host.deviceNodes = nodes
        host.plannedGuestMemory = 8 << 30
        return host
    }

    /// The kernel's own modes: the container 0666, group nodes and device files 0600 root,
    /// /dev/iommu 0660 root:root. Nothing to flag.
    @Test func theKernelsModesAreFine() throws {
        let findings = Doctor.nodeAccess(try Self.host([
            Self.node("/dev/vfio/vfio", mode: 0o666, container: true), Self.node("/dev/vfio/12"),
            Self.node("/dev/vfio/devices/vfio0"), Self.node("/dev/iommu", mode: 0o660),
        ]))
        #expect(findings.map(\.id) == ["vfio.node-access"])
        #expect(findings.first?.status == .ok)
        #expect(findings.first?.evidence.contains("/dev/vfio/vfio 0666 root:root: the kernel's mode; alone it opens no device") == true)
    }

    @Test(arguments: [
        (UInt32(0o666), UInt32(0), "/dev/vfio/12 0666 root:root: every local user can open it"),
        (UInt32(0o604), UInt32(0), "/dev/vfio/12 0604 root:root: every local user can open it"),
        (UInt32(0o660), UInt32(106), "/dev/vfio/12 0660 root:kvm: every member of group kvm can open it"),
    ])
    func aNodeOpenToOthersIsFlagged(mode: UInt32, gid: UInt32, evidence: String) throws {
        let findings = Doctor.nodeAccess(try Self.host([Self.node("/dev/vfio/12", gid: gid, group: gid == 0 ? "root" : "kvm", mode: mode)]))
        let finding = try #require(findings.first { $0.id == "vfio.node-access" })
        #expect(finding.status == .warning)
        #expect(finding.evidence.first == evidence)
        #expect(finding.remedy?.contains("vfioctl bind ADDRESS --owner USER") == true)
    }

    @Test func aWorldOpenIOMMUNodeIsFlagged() throws {
        let findings = Doctor.nodeAccess(try Self.host([Self.node("/dev/iommu", mode: 0o666)]))
        #expect(findings.first?.status == .warning)
        #expect(findings.first?.evidence.first == "/dev/iommu 0666 root:root: every local user can open it")
    }

    @Test func aVMMUsersMemlockIsNamed() throws {
        let findings = Doctor.nodeAccess(try Self.host([
            Self.node("/dev/vfio/12", uid: 1000, gid: 1000, user: "vmm", group: "vmm"),
            Self.node("/dev/vfio/devices/vfio0", uid: 1000, gid: 1000, user: "vmm", group: "vmm"),
        ]))
        #expect(findings.first?.status == .ok)
        let user = try #require(findings.first { $0.id == "vfio.vmm-user.vmm" })
        // 8 GiB of RAM + 1 GiB (libvirt's rule).
        #expect(user.evidence.contains { $0.contains("vmm's RLIMIT_MEMLOCK must be at least 9 GiB") })
        #expect(user.remedy?.contains("LimitMEMLOCK=9663676416") == true)
        #expect(user.remedy?.contains("vmm hard memlock 9437184") == true)
    }

    @Test func noNodesNoFinding() throws {
        #expect(Doctor.nodeAccess(try Self.host([])).isEmpty)
    }
}
