import Foundation
import PCIInventory
import SysfsFixtures
import Testing

@Suite struct CPUListTests {
    @Test func parsesTheKernelsSpelling() {
        #expect(CPUList(parsing: "0-7,16-23")?.count == 16)
        #expect(CPUList(parsing: "0-7,16-23")?.text == "0-7,16-23")
        #expect(CPUList(parsing: "5")?.ranges == [5...5])
        #expect(CPUList(parsing: "")?.count == 0)
    }

    @Test(arguments: ["7-0", "a-b", "0-", "-3", "0,,1", "1-2-3", "0 1", "123456789", "0-7\n8"])
    func rejectsAnythingElse(text: String) {
        #expect(CPUList(parsing: text) == nil)
    }
}

@Suite struct TopologyFixtureTests {
    /// Two stacks on two NUMA nodes: PFs 0-3 below pci0000:10 on node 0, PFs 4-7 below pci0000:20 on node 1.
    static let host = FixtureHost.largeSRIOVHost(deviceCount: 40)

    @Test func numaNodeLocalCPUsRootPortAndRootComplex() throws {
        try scanFixture(Self.host, detail: .summary) { inventory, _ in
            let pf = try #require(inventory.device(try PCIAddress(parsing: "0000:21:00.0")))
            #expect(pf.numaNode == 1)
            #expect(pf.localCPUs == "32-63")
            #expect(pf.rootPort == (try PCIAddress(parsing: "0000:20:00.0")))
            #expect(pf.rootComplex == "pci0000:20")
            let firstPF = try #require(inventory.device(try PCIAddress(parsing: "0000:11:00.0")))
            #expect(firstPF.numaNode == 0 && firstPF.localCPUs == "0-31" && firstPF.rootComplex == "pci0000:10")
            let vf = try #require(inventory.devices.first { $0.physicalFunction == nil && $0.address.bus == 0x11 && $0.address != firstPF.address })
            #expect(vf.rootPort == firstPF.rootPort)
            let hostBridge = try #require(inventory.device(try PCIAddress(parsing: "0000:00:00.0")))
            #expect(hostBridge.rootPort == nil && hostBridge.rootComplex == "pci0000:00")
        }
    }

    @Test func malformedLocalCPUListIsAProblemNotAValue() throws {
        var host = FixtureHost.gpuWorkstation
        let index = try #require(host.devices.firstIndex { $0.address == GPUWorkstation.nvme })
        host.devices[index].faults.append(.replaceAttribute("local_cpulist", contents: "0-3;rm -rf\n"))
        try scanFixture(host, detail: .summary) { inventory, _ in
            let nvme = try #require(inventory.device(try PCIAddress(parsing: "02:00.0")))
            #expect(nvme.localCPUs == nil)
            #expect(nvme.problems.contains { $0.contains("local_cpulist") })
        }
    }

    @Test func listJSONCarriesTopologyAndDRAAttributes() throws {
        try withTemporarySysfsTree(Self.host) { tree in
            let result = try VfioctlBinary.run(["list", "--json", "--sysfs-root", tree.rootPath])
            #expect(result.status == 0, "\(result.stderr)")
            let devices = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
            let pf = try #require(devices.first { $0["address"] as? String == "0000:21:00.0" })
            #expect(pf["numa_node"] as? Int == 1)
            #expect(pf["local_cpus"] as? String == "32-63")
            #expect(pf["pcie_root_port"] as? String == "0000:20:00.0")
            #expect(pf["pcie_root"] as? String == "pci0000:20")
            let dra = try #require(pf["dra_attributes"] as? [String: Any])
            #expect(dra["resource.kubernetes.io/pciBusID"] as? String == "0000:21:00.0")
            #expect(dra["resource.kubernetes.io/pcieRoot"] as? String == "pci0000:20")
            #expect(dra["resource.kubernetes.io/numaNode"] as? Int == 1)
            let hostBridge = try #require(devices.first { $0["address"] as? String == "0000:00:00.0" })
            #expect(hostBridge["pcie_root_port"] is NSNull)

            let text = try VfioctlBinary.run(["list", "--sysfs-root", tree.rootPath])
            #expect(text.stdout.split(separator: "\n").contains { $0.hasPrefix("0000:21:00.0 ") && $0.hasSuffix("  numa 1  cpus 32-63  root-port 0000:20:00.0") })
            let show = try VfioctlBinary.run(["show", "21:00.0", "--sysfs-root", tree.rootPath])
            #expect(show.stdout.contains("  Local CPUs:      32-63"))
            #expect(show.stdout.contains("  Root port:       0000:20:00.0"))
            #expect(show.stdout.contains("  Root complex:    pci0000:20"))
        }
    }

    @Test func absentTopologyIsNullNeverMissing() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            for command in [["list", "--json"], ["show", "00:00.0", "--json"]] {
                let result = try VfioctlBinary.run(command + ["--sysfs-root", tree.rootPath])
                #expect(result.status == 0)
                let parsed = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
                let devices = (parsed as? [[String: Any]]) ?? [(parsed as? [String: Any]) ?? [:]]
                for device in devices {
                    // The workstation reports no NUMA affinity (-1): null, and the key is there.
                    #expect(device["numa_node"] is NSNull, "\(command)")
                    #expect(device.keys.contains("pcie_root_port") && device.keys.contains("local_cpus"))
                    let dra = try #require(device["dra_attributes"] as? [String: Any])
                    #expect(dra["resource.kubernetes.io/numaNode"] is NSNull)
                    #expect(dra.keys.count == 4)
                    #expect(dra["vfioctl/vfioDeviceFile"] is NSNull)
                }
            }
        }
    }
}
