import Foundation
import SysfsFixtures
import Testing
@testable import PCIBinding
@testable import PCIInventory

/// `vfioctl rebar`'s rules and write on the workstation fixture, its GPU (an RTX 3090) given a
/// Resizable BAR capability for BAR1 (256 MiB now, 256 MiB-32 GiB offered), with the emulated
/// kernel's `resourceN_resize`.
@Suite("Resizable BAR", .serialized)
struct ResizableBARTests {
    static let gpu = GPUWorkstation.gpu.description
    static let rootPort = GPUWorkstation.pegRootPort.description

    /// The workstation with the GPU on `driver` and BAR1 resizable (codes 8...15).
    static func host(driver: String? = nil, resizeFile: Bool = true) -> FixtureHost {
        var host = FixtureHost.gpuWorkstation
        host.devices = host.devices.map { device in
            guard device.address == GPUWorkstation.gpu else { return device }
            var device = device
            device.driver = driver
            device.driverOverride = nil
            device.resizableBARs = [.sizes(1, codes: 8...15, resizeFile: resizeFile)]
            return device
        }
        return host
    }

    /// Opens the root port's prefetchable window to 64 GiB at 64 GiB (as firmware with Above 4G
    /// Decoding does); the fixture otherwise sizes it to the BARs below.
    static func widenBridgeWindow(_ lab: BindingLab) throws {
        let path = lab.kernel.devicePath(rootPort) + "/resource"
        var lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
        lines[15] = "0x0000001000000000 0x0000001fffffffff 0x0000000000102201"
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: false, encoding: .utf8)
    }

    static func request(_ size: ResizableBARRequest.Size, bar: Int = 1) throws -> ResizableBARRequest {
        ResizableBARRequest(address: try PCIAddress(parsing: gpu), bar: bar, size: size)
    }

    static func plan(_ lab: BindingLab, _ size: ResizableBARRequest.Size, bar: Int = 1) throws -> ResizableBARPlan {
        let binder = lab.binder()
        return try ResizableBARPlanner.plan(try request(size, bar: bar), inventory: try lab.inventory(),
                                            bridgeWindow: binder.prefetchableWindow(of:))
    }

    static func refusal(_ lab: BindingLab, _ size: ResizableBARRequest.Size, bar: Int = 1) throws -> String? {
        do {
            _ = try plan(lab, size, bar: bar)
            return nil
        } catch let error as BindingError {
            guard case .refused(let reason) = error else { return "not a refusal: \(error)" }
            return reason
        }
    }

    @Test func inventoryListsTheCapabilityAndTheKernelSizes() throws {
        let lab = try BindingLab(Self.host())
        defer { lab.remove() }
        let device = try #require(try lab.inventory().device(try PCIAddress(parsing: Self.gpu)))
        let entry = try #require(device.resizableBARs.first)
        #expect(device.resizableBARs.count == 1)
        #expect(entry.index == 1)
        #expect(entry.currentSize == 256 << 20)
        #expect(entry.supportedSizes == (8...15).map { UInt64(1) << UInt64(20 + $0) })
        #expect(entry.kernelSizes == entry.supportedSizes)
    }

    @Test func maxResizesAndTheResourceShowsIt() throws {
        let lab = try BindingLab(Self.host())
        defer { lab.remove() }
        try Self.widenBridgeWindow(lab)
        let plan = try Self.plan(lab, .maximum)
        #expect(plan.currentSize == 256 << 20)
        #expect(plan.newSize == 32 << 30)
        #expect(plan.code == 15)
        #expect(plan.bridge?.description == Self.rootPort)
        try lab.binder().resize(plan)
        let device = try #require(try lab.inventory().device(try PCIAddress(parsing: Self.gpu)))
        #expect(device.bars.first { $0.index == 1 }?.size == 32 << 30)
        #expect(device.resizableBARs.first?.currentSize == 32 << 30)
        #expect(lab.kernel.writes.contains { $0.hasSuffix("resource1_resize 15") })
        // Asked again: nothing to write.
        #expect(try Self.plan(lab, .bytes(32 << 30)).isUnchanged)
    }

    @Test func aBoundDriverIsRefusedByThePlanAndByTheKernel() throws {
        let lab = try BindingLab(Self.host(driver: "nouveau"))
        defer { lab.remove() }
        try Self.widenBridgeWindow(lab)
        #expect(try Self.refusal(lab, .maximum)?.contains("bound to nouveau") == true)
        // The kernel itself answers EBUSY, and nothing changes.
        #expect(throws: BindingError.self) {
            try lab.kernel.write("15", to: lab.kernel.devicePath(Self.gpu) + "/resource1_resize", timeout: 1)
        }
        #expect(try lab.inventory().device(try PCIAddress(parsing: Self.gpu))?.bars.first { $0.index == 1 }?.size == 256 << 20)
    }

    @Test func aWindowTooSmallIsRefusedWithTheNumbers() throws {
        let lab = try BindingLab(Self.host())
        defer { lab.remove() }
        // The fixture's window holds the GPU's BARs as they are: 288 MiB.
        let reason = try #require(try Self.refusal(lab, .bytes(1 << 30)))
        #expect(reason.contains("prefetchable window is 288 MiB"))
        #expect(reason.contains("1 GiB"))
        // Past the plan, the kernel says ENOSPC and the BAR keeps its size.
        let plan = ResizableBARPlan(address: try PCIAddress(parsing: Self.gpu), bar: 1, currentSize: 256 << 20, newSize: 1 << 30,
                                    code: 10, bridge: try PCIAddress(parsing: Self.rootPort))
        do {
            try lab.binder().resize(plan)
            Issue.record("the emulated kernel took a size its bridge window cannot hold")
        } catch {
            #expect("\(error)".contains("No space left on device"))
        }
        #expect(try lab.inventory().device(try PCIAddress(parsing: Self.gpu))?.bars.first { $0.index == 1 }?.size == 256 << 20)
    }

    @Test func sizesTheDeviceDoesNotOfferAreRefused() throws {
        let lab = try BindingLab(Self.host())
        defer { lab.remove() }
        try Self.widenBridgeWindow(lab)
        #expect(try Self.refusal(lab, .bytes(64 << 30))?.contains("does not support 64 GiB") == true)
        #expect(try Self.refusal(lab, .bytes(3 << 30))?.contains("not a power of two") == true)
        #expect(try Self.refusal(lab, .bytes(1 << 30), bar: 3)?.contains("is not resizable") == true)
        // The emulated kernel: EINVAL for a code the device does not offer.
        #expect(throws: BindingError.self) {
            try lab.kernel.write("16", to: lab.kernel.devicePath(Self.gpu) + "/resource1_resize", timeout: 1)
        }
    }

    @Test func noResizeFileMeansTheKernelCannot() throws {
        let lab = try BindingLab(Self.host(resizeFile: false))
        defer { lab.remove() }
        #expect(try Self.refusal(lab, .maximum)?.contains("no resource1_resize") == true)
    }

    @Test func virtualFunctionsBlockTheResize() throws {
        // The SR-IOV PF of the workstation with a resizable BAR 0 and its VFs enabled.
        var host = FixtureHost.gpuWorkstation
        host.devices = host.devices.map { device in
            guard device.address == GPUWorkstation.sriovPhysicalFunction else { return device }
            var device = device
            device.driver = nil
            device.resizableBARs = [.sizes(0, codes: 0...10)]
            return device
        }
        let lab = try BindingLab(host)
        defer { lab.remove() }
        let pf = GPUWorkstation.sriovPhysicalFunction.description
        let request = ResizableBARRequest(address: try PCIAddress(parsing: pf), bar: 0, size: .maximum)
        do {
            _ = try ResizableBARPlanner.plan(request, inventory: try lab.inventory(), bridgeWindow: { _ in 0...UInt64.max })
            Issue.record("planned a resize with VFs enabled")
        } catch {
            #expect("\(error)".contains("VFs enabled"))
        }
        // 6.15 and later: the kernel refuses too.
        lab.kernel.refusesResizeWithVFs = true
        #expect(throws: BindingError.self) {
            try lab.kernel.write("10", to: lab.kernel.devicePath(pf) + "/resource0_resize", timeout: 1)
        }
    }
}
