import Foundation
import PCIInventory
import Testing
import VFIO

/// A throwaway directory tree: `files` are created empty, `directories` as given, under a fresh root.
private struct ScratchTree {
    let root: String
    init(directories: [String] = [], files: [String] = []) throws {
        root = NSTemporaryDirectory() + "vfioctl-backend-\(UUID().uuidString)"
        for directory in directories {
            try FileManager.default.createDirectory(atPath: root + "/" + directory, withIntermediateDirectories: true)
        }
        for file in files {
            let path = root + "/" + file
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        }
    }
    func remove() { try? FileManager.default.removeItem(atPath: root) }
}

private let edu = try! PCIAddress(parsing: "0000:00:02.0")

@Suite("Choosing the VFIO backend")
struct BackendChoiceTests {
    @Test("auto takes iommufd only with /dev/iommu and the device's file, else type1")
    func autoChoice() throws {
        let both = VFIOBackendFacts(hasIOMMUFD: true, hasContainer: true, deviceFile: "vfio0")
        #expect(try VFIOBackendRequest.auto.resolve(both, device: edu) == .iommufd)
        let noNode = VFIOBackendFacts(hasIOMMUFD: false, hasContainer: true, deviceFile: "vfio0")
        #expect(try VFIOBackendRequest.auto.resolve(noNode, device: edu) == .type1)
        let noFile = VFIOBackendFacts(hasIOMMUFD: true, hasContainer: true, deviceFile: nil)
        #expect(try VFIOBackendRequest.auto.resolve(noFile, device: edu) == .type1)
        #expect(try VFIOBackendRequest.type1.resolve(both, device: edu) == .type1)
        #expect(try VFIOBackendRequest.iommufd.resolve(both, device: edu) == .iommufd)
    }

    @Test("iommufd is refused naming the missing kernel option")
    func iommufdRefused() {
        let noNode = VFIOBackendFacts(hasIOMMUFD: false, hasContainer: true, deviceFile: nil)
        #expect(throws: VFIOError.self) { try VFIOBackendRequest.iommufd.resolve(noNode, device: edu) }
        do {
            _ = try VFIOBackendRequest.iommufd.resolve(noNode, device: edu)
        } catch {
            guard case .iommufdUnavailable(_, let missing, _) = error else { Issue.record("\(error)"); return }
            #expect(missing == "CONFIG_IOMMUFD")
            #expect(error.description.contains("CONFIG_IOMMUFD"))
        }
        let noFile = VFIOBackendFacts(hasIOMMUFD: true, hasContainer: true, deviceFile: nil)
        do {
            _ = try VFIOBackendRequest.iommufd.resolve(noFile, device: edu)
            Issue.record("a device without a device file was accepted")
        } catch {
            guard case .iommufdUnavailable(_, let missing, _) = error else { Issue.record("\(error)"); return }
            #expect(missing == "CONFIG_VFIO_DEVICE_CDEV")
        }
        // No device file because the device is not on vfio-pci: say to bind it, not that the
        // kernel lacks device files.
        let unbound = VFIOBackendFacts(hasIOMMUFD: true, hasContainer: true, deviceFile: nil, nonVFIODriver: "none")
        do {
            _ = try VFIOBackendRequest.iommufd.resolve(unbound, device: edu)
            Issue.record("an unbound device was accepted")
        } catch {
            #expect(error == .notBoundToVFIO(device: "0000:00:02.0", driver: "none"))
            #expect(error.description.contains("bind 0000:00:02.0 to vfio-pci") && !error.description.contains("CONFIG_"), "\(error)")
        }
    }

    @Test("a device on another driver, or none, is read as not bound; one on vfio-pci is not")
    func nonVFIODriverFromSysfs() throws {
        let sys = try ScratchTree(directories: ["bus/pci/devices/0000:00:02.0", "bus/pci/drivers/e1000e", "bus/pci/drivers/vfio-pci"])
        defer { sys.remove() }
        let device = sys.root + "/bus/pci/devices/0000:00:02.0"
        #expect(try VFIOBackendFacts.read(edu, sysfsRoot: sys.root, devRoot: sys.root).nonVFIODriver == "none")
        try FileManager.default.createSymbolicLink(atPath: device + "/driver", withDestinationPath: "../../drivers/e1000e")
        #expect(try VFIOBackendFacts.read(edu, sysfsRoot: sys.root, devRoot: sys.root).nonVFIODriver == "e1000e")
        try FileManager.default.removeItem(atPath: device + "/driver")
        try FileManager.default.createSymbolicLink(atPath: device + "/driver", withDestinationPath: "../../drivers/vfio-pci")
        #expect(try VFIOBackendFacts.read(edu, sysfsRoot: sys.root, devRoot: sys.root).nonVFIODriver == nil)
    }

    @Test("facts come from /dev and the device's sysfs vfio-dev entry")
    func factsFromTrees() throws {
        let sys = try ScratchTree(directories: ["bus/pci/devices/0000:00:02.0/vfio-dev/vfio3"])
        let dev = try ScratchTree(files: ["iommu", "vfio/vfio"])
        defer { sys.remove(); dev.remove() }
        let facts = try VFIOBackendFacts.read(edu, sysfsRoot: sys.root, devRoot: dev.root)
        #expect(facts == VFIOBackendFacts(hasIOMMUFD: true, hasContainer: true, deviceFile: "vfio3"))
        #expect(try VFIOBackendRequest.auto.resolve(facts, device: edu) == .iommufd)

        let bareDev = try ScratchTree(files: ["vfio/vfio"])
        defer { bareDev.remove() }
        let legacy = try VFIOBackendFacts.read(edu, sysfsRoot: sys.root, devRoot: bareDev.root)
        #expect(!legacy.hasIOMMUFD)
        #expect(try VFIOBackendRequest.auto.resolve(legacy, device: edu) == .type1)
    }
}

@Suite("Finding a device's VFIO device file")
struct DeviceFileTests {
    @Test("names are vfio and a number without leading zeros")
    func names() {
        for good in ["vfio0", "vfio1", "vfio42", "vfio4294967295"] { #expect(VFIODeviceFile.isValidName(good), "\(good)") }
        for bad in ["vfio", "vfio01", "vfio-1", "vfio1/../x", "../vfio1", "vfio 1", "VFIO1", "vfio12345678901", "iommu", ""] {
            #expect(!VFIODeviceFile.isValidName(bad), "\(bad)")
        }
    }

    @Test("no vfio-dev directory: no device file")
    func missing() throws {
        let sys = try ScratchTree(directories: ["bus/pci/devices/0000:00:02.0"])
        defer { sys.remove() }
        #expect(try VFIODeviceFile.name(of: edu, sysfsRoot: sys.root) == nil)
    }

    @Test("a malformed vfio-dev entry is refused, not guessed at")
    func malformed() throws {
        for entries in [["vfio01"], ["vfio1", "vfio2"], ["..hidden"], []] {
            let sys = try ScratchTree(directories: ["bus/pci/devices/0000:00:02.0/vfio-dev"] +
                                      entries.map { "bus/pci/devices/0000:00:02.0/vfio-dev/\($0)" })
            defer { sys.remove() }
            #expect(throws: VFIOError.self, "\(entries)") { try VFIODeviceFile.name(of: edu, sysfsRoot: sys.root) }
        }
    }
}

@Suite("Pin accounting per backend")
struct PinAccountingTests {
    let mib: UInt64 = 1 << 20

    @Test("type1 counts this process's locked memory; iommufd only the pins it knows of")
    func lockedCounts() throws {
        // 64 MiB limit, 48 MiB mlocked by the process, nothing pinned yet.
        let limit = MemlockLimit(current: 64 * mib, maximum: 64 * mib, lockedBytes: 48 * mib)
        #expect(!limit.allows(pinning: 32 * mib, alreadyPinned: 0, accounting: .type1))
        #expect(limit.allows(pinning: 32 * mib, alreadyPinned: 0, accounting: .iommufd))
        // The IOAS's own pins count on iommufd.
        #expect(!limit.allows(pinning: 32 * mib, alreadyPinned: 40 * mib, accounting: .iommufd))
        #expect(throws: VFIOError.self) {
            try DMABudget.check(ramBytes: 32 * mib, mappings: 1, dmaAvailable: nil, memlock: limit, pinnedBytes: 0, accounting: .type1)
        }
        try DMABudget.check(ramBytes: 32 * mib, mappings: 1, dmaAvailable: nil, memlock: limit, pinnedBytes: 0, accounting: .iommufd)
    }

    @Test("CAP_IPC_LOCK exempts both backends")
    func exempt() {
        let limit = MemlockLimit(current: mib, maximum: mib, exempt: true, lockedBytes: 100 * mib)
        for accounting in [PinAccounting.type1, .iommufd] {
            #expect(limit.allows(pinning: 1 << 40, alreadyPinned: 1 << 40, accounting: accounting))
        }
    }
}

@Suite("iommufd errors name the case and the fix")
struct IOMMUFDErrorTextTests {
    @Test("a BAR's PFNMAP mapping: EFAULT, the dma-buf path, Linux 6.19, and type1 as the other way")
    func pfnmap() {
        let text = VFIOError.pfnmapNotMappable(size: 1 << 30, iova: 2 << 20).description
        for needed in ["EFAULT", "PFNMAP", "dma-buf", "IOMMU_IOAS_MAP_FILE", "mapPeerBAR", "6.19", "CONFIG_VFIO_PCI_DMABUF", "--backend type1"] {
            #expect(text.contains(needed), "\(needed) missing from: \(text)")
        }
    }

    @Test("EFAULT from IOMMU_IOAS_MAP of memory not known to be a BAR still points at the dma-buf path")
    func efaultHint() {
        let text = VFIOError.system(operation: "IOMMU_IOAS_MAP of 0x1000 bytes at IOVA 0x200000", errno: .badAddress).description
        #expect(text.contains("PFNMAP") && text.contains("mapPeerBAR"), "\(text)")
        // Only that call gets the hint.
        let other = VFIOError.system(operation: "VFIO_IOMMU_MAP_DMA of 0x1000 bytes", errno: .badAddress).description
        #expect(!other.contains("mapPeerBAR"), "\(other)")
    }

    @Test("a busy device file and a kernel without iommufd say what to do")
    func busyAndUnavailable() {
        let busy = VFIOError.deviceBusy(device: "0000:00:02.0", path: "/dev/vfio/devices/vfio0").description
        #expect(busy.contains("EBUSY") && busy.contains("another iommufd") && busy.contains("/dev/vfio/N"), "\(busy)")
        let missing = VFIOError.iommufdUnavailable(device: nil, missing: "CONFIG_IOMMUFD", detail: "/dev/iommu does not exist").description
        #expect(missing.contains("CONFIG_IOMMUFD") && missing.contains("--backend type1"), "\(missing)")
    }
}
