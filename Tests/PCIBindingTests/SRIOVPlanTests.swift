import Foundation
import PCIBinding
import PCIInventory
import SysfsFixtures
import Testing

@Suite struct SRIOVPlanTests {
    static let pf = "0000:08:00.0"

    func withInventory(_ host: FixtureHost = .gpuWorkstation, _ body: (PCIInventory) throws -> Void) throws {
        try withTemporarySysfsTree(host) { tree in
            try body(try PCIInventory.scan(root: SysfsRoot(path: tree.rootPath), detail: .full, names: PCINameDatabase()))
        }
    }

    /// The workstation's X710 with VF 0 left unbound instead of on iavf.
    static var idleVFs: FixtureHost {
        var host = FixtureHost.gpuWorkstation
        if let index = host.devices.firstIndex(where: { $0.address == GPUWorkstation.sriovVirtualFunctions[0] }) {
            host.devices[index].driver = nil
        }
        return host
    }

    @Test func refusesAPFWithoutSRIOV() throws {
        try withInventory { inventory in
            #expect(throws: BindingError.sriov("0000:02:00.0 has no SR-IOV capability (no sriov_totalvfs in sysfs): it cannot create VFs")) {
                try SRIOVPlan.plan(try PCIAddress(parsing: "02:00.0"), requested: 2, inventory: inventory, groupsInUse: [])
            }
        }
    }

    @Test func refusesACountAboveTotal() throws {
        try withInventory { inventory in
            #expect(throws: BindingError.sriov("\(Self.pf) supports at most 64 VFs (sriov_totalvfs); 65 asked")) {
                try SRIOVPlan.plan(try PCIAddress(parsing: Self.pf), requested: 65, inventory: inventory, groupsInUse: [])
            }
        }
    }

    @Test func refusesAVFAddress() throws {
        try withInventory { inventory in
            #expect(throws: BindingError.self) {
                try SRIOVPlan.plan(try PCIAddress(parsing: "08:02.1"), requested: 1, inventory: inventory, groupsInUse: [])
            }
        }
    }

    /// Plans `requested` VFs and expects a refusal whose evidence contains `text`.
    func expectRefusal(_ host: FixtureHost, requested: Int, groupsInUse: Set<Int>, _ text: String) throws {
        try withInventory(host) { inventory in
            do {
                _ = try SRIOVPlan.plan(try PCIAddress(parsing: Self.pf), requested: requested, inventory: inventory, groupsInUse: groupsInUse)
                Issue.record("not refused: \(text)")
            } catch {
                guard case BindingError.refused(let evidence)? = error as? BindingError else { Issue.record("\(error)"); return }
                #expect(evidence.contains(text), "\(evidence)")
            }
        }
    }

    @Test func refusesRemovingVFsAHostDriverUses() throws {
        try expectRefusal(.gpuWorkstation, requested: 0, groupsInUse: [], "0000:08:02.0 is in use by the host driver iavf")
    }

    @Test func refusesRemovingVFsAVMHoldsOpen() throws {
        try expectRefusal(Self.idleVFs, requested: 2, groupsInUse: [15], "0000:08:02.1: /dev/vfio/15 is open")
    }

    @Test func plansChangesThroughZero() throws {
        try withInventory(Self.idleVFs) { inventory in
            let address = try PCIAddress(parsing: Self.pf)
            let change = try SRIOVPlan.plan(address, requested: 2, inventory: inventory, groupsInUse: [])
            #expect(change.current == 4 && change.total == 64 && change.resetsFirst)
            #expect(change.removed.map(\.description) == GPUWorkstation.sriovVirtualFunctions.map(\.description))
            let remove = try SRIOVPlan.plan(address, requested: 0, inventory: inventory, groupsInUse: [])
            #expect(!remove.resetsFirst && remove.removed.count == 4)
            let same = try SRIOVPlan.plan(address, requested: 4, inventory: inventory, groupsInUse: [15])
            #expect(same.isUnchanged && same.removed.isEmpty)
        }
    }
}

@Suite struct SRIOVCLITests {
    func snapshot(_ tree: TemporarySysfsTree) throws -> [String] {
        let directory = tree.rootPath + "/bus/pci/devices/0000:08:00.0/"
        return try ["sriov_numvfs", "sriov_drivers_autoprobe"].map { try String(contentsOfFile: directory + $0, encoding: .utf8) }
    }

    @Test func badInputIsAClearErrorAndChangesNothing() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let before = try snapshot(tree)
            let state = tree.rootPath + "/state"
            let cases: [([String], Int32, String)] = [
                (["02:00.0", "--vfs", "2"], 1, "has no SR-IOV capability"),
                (["08:00.0", "--vfs", "65"], 1, "supports at most 64 VFs"),
                (["08:00.0", "--vfs", "0"], 3, "in use by the host driver iavf"),
                (["08:00.0", "--vfs", "-1"], 64, "--vfs"),
            ]
            for (arguments, status, text) in cases {
                let result = try VfioctlBinary.run(["sriov"] + arguments + ["--sysfs-root", tree.rootPath, "--state-dir", state])
                #expect(result.status == status, "\(arguments): \(result.stderr)")
                #expect(result.stderr.contains(text), "\(arguments): \(result.stderr)")
            }
            let dry = try VfioctlBinary.run(["sriov", "08:00.0", "--vfs", "4", "--sysfs-root", tree.rootPath, "--state-dir", state])
            #expect(dry.status == 0)
            #expect(dry.stdout.contains("4 -> 4 VFs (of 64): unchanged"))
            #expect(try snapshot(tree) == before)
            #expect(!FileManager.default.fileExists(atPath: state + "/journal.json"))
        }
    }

    @Test func showListsTheVFsWithTheirGroups() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let result = try VfioctlBinary.run(["show", "08:00.0", "--sysfs-root", tree.rootPath])
            #expect(result.stdout.contains("    VF 0000:08:02.1  group 15  driver vfio-pci"))
            let json = try VfioctlBinary.run(["show", "08:00.0", "--json", "--sysfs-root", tree.rootPath])
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
            let vfs = try #require((object["sriov"] as? [String: Any])?["vfs"] as? [[String: Any]])
            #expect(vfs.compactMap { $0["iommu_group"] as? Int } == [14, 15, 16, 17])
        }
    }
}

@Suite struct SRIOVVFIOPhysicalFunctionTests {
    /// The workstation with none of the X710's VFs on a host driver.
    static var idleHost: FixtureHost {
        var host = FixtureHost.gpuWorkstation
        for index in host.devices.indices where GPUWorkstation.sriovVirtualFunctions.contains(host.devices[index].address) {
            host.devices[index].driver = nil
        }
        return host
    }

    @Test func aVFIOPFNeedsEnableSRIOV() throws {
        try withTemporarySysfsTree(Self.idleHost) { tree in
            let inventory = try PCIInventory.scan(root: SysfsRoot(path: tree.rootPath), detail: .full, names: PCINameDatabase())
            let pf = try PCIAddress(parsing: SRIOVPlanTests.pf)
            let plan = try SRIOVPlan.plan(pf, requested: 2, inventory: inventory, groupsInUse: [])
            #expect(throws: BindingError.self) { try SRIOVPlan.checkVFIOPhysicalFunction(plan, driver: "vfio-pci", enableSRIOV: "N") }
            #expect(throws: BindingError.self) { try SRIOVPlan.checkVFIOPhysicalFunction(plan, driver: "vfio-pci", enableSRIOV: nil) }
            do {
                try SRIOVPlan.checkVFIOPhysicalFunction(plan, driver: "vfio-pci", enableSRIOV: "N")
            } catch {
                #expect("\(error)".contains("enable_sriov=1"))
            }
            try SRIOVPlan.checkVFIOPhysicalFunction(plan, driver: "vfio-pci", enableSRIOV: "Y")
            // Another driver, or removing VFs, needs no parameter.
            try SRIOVPlan.checkVFIOPhysicalFunction(plan, driver: "i40e", enableSRIOV: "N")
            let none = try SRIOVPlan.plan(pf, requested: 0, inventory: inventory, groupsInUse: [])
            try SRIOVPlan.checkVFIOPhysicalFunction(none, driver: "vfio-pci", enableSRIOV: "N")
        }
    }

    @Test func aVFTokenForAPFNotOnVFIOIsAClearError() throws {
        try withTemporarySysfsTree(Self.idleHost) { tree in
            let bad = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "sriov", SRIOVPlanTests.pf, "--vfs", "2", "--vf-token", "not-a-uuid"])
            #expect(bad.status == 64)
            let notVFIO = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "sriov", SRIOVPlanTests.pf, "--vfs", "2", "--dry-run",
                                                  "--vf-token", "2ab74924-c335-45f4-9b16-8569e5b08258"])
            #expect(notVFIO.status == 1 && notVFIO.stderr.contains("not vfio-pci: a VF token is vfio-pci's"), "\(notVFIO.stderr)")
        }
    }

    /// `--persist` on an unchanged count writes the PF's count rule (set on bind, autoprobe off)
    /// and one address rule per VF; `persist remove PF` takes the count rule away.
    @Test func persistKeepsTheVFCount() throws {
        try withTemporarySysfsTree(Self.idleHost) { tree in
            let rules = tree.rootPath + "-rules"
            defer { try? FileManager.default.removeItem(atPath: rules) }
            let result = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "sriov", SRIOVPlanTests.pf, "--vfs", "4", "--persist", "--rules-dir", rules])
            #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
            let pf = try PCIAddress(parsing: SRIOVPlanTests.pf)
            let udev = UdevRules(directory: rules)
            let text = try String(contentsOfFile: udev.sriovPath(for: pf), encoding: .utf8)
            #expect(text.contains("ACTION==\"bind\", SUBSYSTEM==\"pci\", KERNEL==\"\(pf)\", ATTR{sriov_drivers_autoprobe}=\"0\", ATTR{sriov_numvfs}=\"4\""))
            #expect(udev.list().map(\.description) == GPUWorkstation.sriovVirtualFunctions.map(\.description))
            let removed = try VfioctlBinary.run(["--sysfs-root", tree.rootPath, "persist", "remove", SRIOVPlanTests.pf, "--rules-dir", rules])
            #expect(removed.status == 0 && removed.stdout.contains("VF count rule removed"), "\(removed.stdout)")
            #expect(!FileManager.default.fileExists(atPath: udev.sriovPath(for: pf)))
        }
    }
}
