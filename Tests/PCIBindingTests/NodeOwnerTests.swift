import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SysfsFixtures
import Testing
@testable import PCIBinding
@testable import PCIInventory

/// Accounts for the tests: vmm (1000, group kvm-users 2000) and other (1001, its own group 1001).
struct FakeAccounts: AccountDatabase {
    func user(named name: String) -> (uid: UInt32, gid: UInt32)? { ["vmm": (1000, 2000), "other": (1001, 1001)][name] }
    func group(named name: String) -> UInt32? { ["kvm-users": 2000, "other": 1001, "vfio": 3000][name] }
    func groupName(id: UInt32) -> String? { [2000: "kvm-users", 1001: "other", 3000: "vfio"][id] }
}

@Suite struct NodeOwnerTests {
    @Test func parsesUserAndGroup() throws {
        let owner = try NodeOwner.parse("vmm:vfio", accounts: FakeAccounts()).get()
        #expect(owner == NodeOwner(user: "vmm", uid: 1000, group: "vfio", gid: 3000))
        // Without a group: the user's primary group.
        #expect(try NodeOwner.parse("vmm", accounts: FakeAccounts()).get() == NodeOwner(user: "vmm", uid: 1000, group: "kvm-users", gid: 2000))
    }

    @Test(arguments: [
        ("nobody-here", "there is no user \"nobody-here\""), ("vmm:nogroup", "there is no group \"nogroup\""),
        ("", "is empty"), ("vmm:", "the group name \"\" is empty"), ("-vmm", "starts with -"),
        ("vm\"m", "characters"), ("vmm:a\nb", "characters"), ("1000", "is a number"),
        (String(repeating: "a", count: 33), "longer than 32"),
    ])
    func refusesWithAClearReason(text: String, expected: String) {
        guard case .failure(let error) = NodeOwner.parse(text, accounts: FakeAccounts()) else {
            Issue.record("\(text) was accepted")
            return
        }
        #expect(error.description.contains(expected), "\(error.description)")
    }

    @Test func theSystemDatabaseKnowsRootAndNotAnInventedName() {
        #expect(SystemAccounts().user(named: "root")?.uid == 0)
        #expect(SystemAccounts().user(named: "no-such-user-vfioctl") == nil)
        #expect(SystemAccounts().groupName(id: 0) == "root")
    }

    @Test func theUdevRuleGivesTheNodesToTheOwnerOnly() {
        let rules = UdevRules(directory: "/unused")
        let owner = NodeOwner(user: "vmm", uid: 1000, group: "kvm-users", gid: 2000)
        let text = rules.ruleText(for: address("0000:01:00.0"), owner: owner)
        #expect(text.hasPrefix(rules.ruleText(for: address("0000:01:00.0"))))
        #expect(text.contains(#"SUBSYSTEM=="vfio", KERNEL=="[0-9]*", TEST=="/sys/kernel/iommu_groups/%k/devices/0000:01:00.0", OWNER="vmm", GROUP="kvm-users", MODE="0600""#))
        #expect(text.contains(#"SUBSYSTEM=="vfio-dev", KERNELS=="0000:01:00.0", OWNER="vmm", GROUP="kvm-users", MODE="0600""#))
        #expect(rules.ruleText(for: address("0000:01:00.0"), owner: nil) == rules.ruleText(for: address("0000:01:00.0")))
    }

    @Test func theJournalKeepsTheOwner() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journal = BindingJournal(directory: directory)
        let owner = NodeOwner(user: "vmm", uid: 1000, group: "kvm-users", gid: 2000)
        try journal.record(.init(address: address("0000:02:00.0"), originalDriver: "nvme", originalOverride: nil, identity: nil, state: .bound, nodeOwner: owner))
        #expect(try BindingJournal(directory: directory).entries().first?.nodeOwner == owner)
        let text = try String(contentsOfFile: journal.path, encoding: .utf8)
        #expect(text.contains(#""node_owner":{"gid":2000,"group":"kvm-users","uid":1000,"user":"vmm"}"#))
        // A name no account can have is damage, not an owner.
        try (text.replacingOccurrences(of: "\"vmm\"", with: "\"v m\"")).write(toFile: journal.path, atomically: true, encoding: .utf8)
        #expect(throws: BindingError.self) { try BindingJournal(directory: directory).entries() }
    }
}

/// `bind --owner` and the return to root, on a fixture tree whose group node is a real
/// character device (mknod 1,3: /dev/null's numbers, harmless).
@Suite struct NodeOwnershipTests {
    static let nvme = "0000:02:00.0"
    static let owner = NodeOwner(user: "vmm", uid: 1000, group: "kvm-users", gid: 2000)

    func makeNode(_ path: String) throws -> Bool {
        unlink(path)
        guard mknod(path, S_IFCHR | 0o600, dev_t((1 << 8) | 3)) == 0 else { return false }
        return true
    }

    @Test func bindOwnerThenUnbindGivesTheNodeBackToRoot() throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        let binder = lab.binder()
        _ = try binder.apply(try lab.plan(Self.nvme))
        let node = lab.devRoot + "/vfio/2"
        guard geteuid() == 0, try makeNode(node) else {
            // mknod and chown need root (CAP_MKNOD, CAP_CHOWN): without them there is nothing to check.
            print("skipped: mknod/chown need root")
            return
        }
        let nodes = try binder.giveNodes(of: [address(Self.nvme)], to: Self.owner)
        #expect(nodes == [node])
        let given = try #require(VFIONodeOwnership.status(of: node))
        #expect(given.uid == 1000 && given.gid == 2000 && given.mode == 0o600)
        #expect(try binder.journal.entry(for: address(Self.nvme))?.nodeOwner == Self.owner)
        // A node someone opened to all is closed again by the same call.
        chmod(node, 0o666)
        _ = try binder.giveNodes(of: [address(Self.nvme)], to: Self.owner)
        #expect(VFIONodeOwnership.status(of: node)?.mode == 0o600)

        let back = try binder.unbind(Self.nvme)
        #expect(back.action == .unbound)
        let returned = try #require(VFIONodeOwnership.status(of: node))
        #expect(returned.uid == 0 && returned.gid == 0 && returned.mode == 0o600)
    }

    @Test func aNodeThatIsNotACharacterDeviceIsLeftAlone() throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        let binder = lab.binder()
        _ = try binder.apply(try lab.plan(Self.nvme))
        // The emulated kernel's node is a regular file: never chowned.
        let node = lab.devRoot + "/vfio/2"
        #expect(throws: BindingError.self) { _ = try binder.giveNodes(of: [address(Self.nvme)], to: Self.owner) }
        #expect(VFIONodeOwnership.status(of: node)?.uid == geteuid())
        // A symbolic link in its place is not followed.
        unlink(node)
        let target = lab.devRoot + "/target"
        FileManager.default.createFile(atPath: target, contents: nil)
        symlink(target, node)
        do {
            _ = try binder.giveNodes(of: [address(Self.nvme)], to: Self.owner)
            Issue.record("a symbolic link was accepted")
        } catch {
            #expect(error.description.contains("is not a character device (a symbolic link)"))
        }
        #expect(VFIONodeOwnership.status(of: target)?.uid == geteuid())
    }

    @Test func aDeviceNotOnVFIOHasNoNodeToGive() throws {
        let lab = try BindingLab()
        defer { lab.remove() }
        #expect(throws: BindingError.owner("0000:02:00.0 is not on vfio-pci, so it has no VFIO node to give to vmm:kvm-users")) {
            _ = try lab.binder().giveNodes(of: [address(Self.nvme)], to: Self.owner)
        }
    }
}
