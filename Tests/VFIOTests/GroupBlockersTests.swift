import PCIInventory
import SysfsFixtures
import Testing
import VFIO

/// VFIO's explanation of a refused group uses the inventory's viability rule (one home).
@Suite("group blockers")
struct GroupBlockersTests {
    @Test func blockersAgreeWithTheInventory() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let inventory = try PCIInventory.scan(root: SysfsRoot(path: tree.rootPath), detail: .summary, names: nil)
            for group in inventory.groups {
                let fromInventory = group.blockers.map { "\($0.address) (\($0.driver ?? "?"))" }.sorted()
                #expect(VFIOGroup.blockingMembers(group: group.id, sysfsRoot: tree.rootPath) == fromInventory, "group \(group.id)")
            }
            // The chipset group is blocked by its host drivers; bridges on pcieport and the
            // pci-stub / vfio-pci endpoints behind the switch are not blockers.
            #expect(!VFIOGroup.blockingMembers(group: GPUWorkstation.Group.chipset, sysfsRoot: tree.rootPath).isEmpty)
            #expect(VFIOGroup.blockingMembers(group: GPUWorkstation.Group.behindSwitch, sysfsRoot: tree.rootPath).isEmpty)
            #expect(VFIOGroup.blockingMembers(group: GPUWorkstation.Group.gpu, sysfsRoot: tree.rootPath).isEmpty)
        }
    }

    @Test func theRule() {
        #expect(!GroupViability.blocks(driver: "vfio-pci", isBridge: false))
        #expect(!GroupViability.blocks(driver: "mlx5_vfio_pci", isBridge: false))
        #expect(!GroupViability.blocks(driver: "pci-stub", isBridge: false))
        #expect(!GroupViability.blocks(driver: "shpchp", isBridge: true))
        #expect(!GroupViability.blocks(driver: "pcieport", isBridge: true))
        #expect(GroupViability.blocks(driver: "pcieport", isBridge: false))
        #expect(GroupViability.blocks(driver: "nvme", isBridge: false))
        #expect(GroupViability.blocks(driver: "e1000e", isBridge: true))
    }
}
