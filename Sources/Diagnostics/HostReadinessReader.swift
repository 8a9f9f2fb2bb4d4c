#if canImport(Glibc)
import Glibc
#endif
import KVM
import PCIBinding
import PCIInventory

/// Gathers `HostReadiness` from sysfs, procfs, /dev and /lib/modules, each under its own root so
/// the doctor can be run against a copied or generated tree.
public struct HostReadinessReader {
    public var sysfs: SysfsRoot
    public var procRoot = "/proc"
    public var devRoot = "/dev"
    public var modulesRoot = "/lib/modules"
    public var plannedGuestMemory: UInt64 = 8 << 30
    public var plannedDevices = 1
    public var plannedVIOMMU = false
    public var plannedPageSize: UInt64 = 4096
    let reader = SysfsReader()

    public init(sysfs: SysfsRoot) { self.sysfs = sysfs }

    var isLive: Bool { sysfs.isSystem && procRoot == "/proc" && devRoot == "/dev" }

    public func read(names: PCINameDatabase?) throws(InventoryError) -> HostReadiness {
        let inventory = try PCIInventory.scan(root: sysfs, detail: .full, names: names)
        var host = HostReadiness(inventory: inventory)
        host.plannedGuestMemory = plannedGuestMemory
        host.plannedDevices = plannedDevices
        host.plannedVIOMMU = plannedVIOMMU
        host.plannedPageSize = plannedPageSize
        if let limit = reader.readString(sysfs.appending("module/vfio_iommu_type1/parameters/dma_entry_limit")) {
            host.dmaEntryLimit = UInt64(limit)
        }
        // Intel VT-d: MGAW, bits 21:16 of the capability register, is the address width - 1.
        for unit in inventory.iommu.units {
            guard let cap = reader.readHex(sysfs.appending("class/iommu/\(unit)/intel-iommu/cap")) else { continue }
            let width = Int((cap >> 16) & 0x3f) + 1
            host.iommuAddressWidth = min(host.iommuAddressWidth ?? width, width)
        }
        host.kernelRelease = reader.readString(procRoot + "/sys/kernel/osrelease")
        host.kernelCommandLine = reader.readString(procRoot + "/cmdline")
        if let interrupts = reader.readBytes(procRoot + "/interrupts", limit: 1 << 20) {
            let text = String(decoding: interrupts, as: UTF8.self)
            host.interruptRemapping = text.contains(" IR-")
        }
        if let unsafe = reader.readString(sysfs.appending("module/vfio_iommu_type1/parameters/allow_unsafe_interrupts")) {
            host.allowUnsafeInterrupts = unsafe == "Y" || unsafe == "1"
        }
        let interesting = ["vfio", "vfio_iommu_type1", "vfio_pci", "vfio_pci_core", "kvm", "kvm_intel", "kvm_amd"]
        host.loadedModules = Set(interesting.filter { reader.exists(sysfs.appending("module/\($0)")) })
        if let release = host.kernelRelease {
            host.availableModules = availableModules(release: release, among: interesting)
        }
        host.vfioContainerNode = reader.exists(devRoot + "/vfio/vfio")
        host.kvmNode = reader.exists(devRoot + "/kvm")
        host.iommufdNode = reader.exists(devRoot + "/iommu")
        host.vfioDeviceFiles = reader.exists(devRoot + "/vfio/devices")
        host.deviceNodes = readDeviceNodes()
        host.holders = HolderReader(sysfs: sysfs, procRoot: procRoot, devRoot: devRoot).holdersOfEveryDevice()
        if host.kvmNode && isLive {
            do {
                let system = try KVMSystem()
                let vm = try system.createVM()
                let capabilities = vm.capabilities
                host.kvm = KVMSummary(apiVersion: Int(system.apiVersion), maxMemslots: Int(capabilities.maxMemslots),
                                      readonlyMemory: capabilities.readOnlyMemory, dirtyRingBytes: Int(capabilities.dirtyRingMaxBytes))
            } catch {
                host.kvmError = "\(error)"
            }
        }
        // procRoot/self/limits is this process's RLIMIT_MEMLOCK on the live host (the figure
        // getrlimit gives) and a fixture's chosen limit elsewhere.
        if let limits = reader.readBytes(procRoot + "/self/limits", limit: 1 << 16) {
            if let limit = Self.memlockLimit(limitsFile: String(decoding: limits, as: UTF8.self)) {
                host.memlockKnown = true
                host.memlockLimit = limit.bytes
            }
        } else if isLive {
            var limit = rlimit()
            if getrlimit(__rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue), &limit) == 0 {
                host.memlockKnown = true
                // RLIM_INFINITY is all ones; Swift cannot import the macro (it is written as -1).
                host.memlockLimit = limit.rlim_cur == rlim_t.max ? nil : UInt64(limit.rlim_cur)
            }
        }
        for entry in (reader.listDirectory(sysfs.appending("kernel/mm/hugepages")) ?? []).sorted() {
            guard entry.hasPrefix("hugepages-"), entry.hasSuffix("kB"),
                  let kilobytes = UInt64(entry.dropFirst("hugepages-".count).dropLast(2)),
                  // A name the kernel would never write (a page of 2^64 bytes or more) is skipped.
                  case let (pageSize, overflow) = kilobytes.multipliedReportingOverflow(by: 1024), !overflow else { continue }
            let base = sysfs.appending("kernel/mm/hugepages/\(entry)")
            host.hugePages.append(HugePagePool(pageSize: pageSize,
                                               total: reader.readInt(base + "/nr_hugepages") ?? 0,
                                               free: reader.readInt(base + "/free_hugepages") ?? 0))
        }
        host.transparentHugePages = reader.readString(sysfs.appending("kernel/mm/transparent_hugepage/enabled"))
        host.physicalAddressBits = readPhysicalAddressBits()
        if isLive { host.qemuVersion = Self.qemuVersion() }
        return host
    }

    /// /dev/vfio/vfio, /dev/vfio/N, /dev/vfio/devices/vfioN and /dev/iommu as lstat sees them
    /// (a link or any other kind of file is not a node and is skipped), owners named through
    /// this host's accounts.
    func readDeviceNodes() -> [DeviceNodeAccess] {
        var paths: [(String, Bool)] = []
        let groups = (reader.listDirectory(devRoot + "/vfio") ?? []).filter { $0 == "vfio" || ($0.count <= 9 && $0.allSatisfy { ("0"..."9").contains($0) }) }
        paths += groups.sorted { (Int($0) ?? -1) < (Int($1) ?? -1) }.map { (devRoot + "/vfio/" + $0, $0 == "vfio") }
        paths += (reader.listDirectory(devRoot + "/vfio/devices") ?? []).filter(VFIODeviceFileName.isValid).sorted().map { (devRoot + "/vfio/devices/" + $0, false) }
        paths.append((devRoot + "/iommu", false))
        let accounts = SystemAccounts()
        return paths.compactMap { path, isContainer in
            var status = stat()
            guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFCHR else { return nil }
            return DeviceNodeAccess(path: path, uid: status.st_uid, gid: status.st_gid,
                                    userName: accounts.userName(id: status.st_uid), groupName: accounts.groupName(id: status.st_gid),
                                    mode: UInt32(status.st_mode & 0o7777), isContainer: isContainer)
        }
    }

    /// A soft resource limit as /proc/PID/limits writes it.
    enum SoftLimit: Equatable {
        case unlimited
        case bytes(UInt64)

        /// nil for unlimited, as `HostReadiness.memlockLimit` has it.
        var bytes: UInt64? {
            if case .bytes(let value) = self { return value }
            return nil
        }
    }

    /// The soft limit on the "Max locked memory" line of /proc/PID/limits (columns: name, soft,
    /// hard, units); nil when the line is missing or its soft column is neither a number nor
    /// "unlimited". Pure.
    static func memlockLimit(limitsFile text: String) -> SoftLimit? {
        let name = "Max locked memory"
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            guard let soft = line.dropFirst(name.count).split(separator: " ").first else { return nil }
            if soft == "unlimited" { return .unlimited }
            return UInt64(soft).map(SoftLimit.bytes)
        }
        return nil
    }

    /// Modules the kernel has: built in (modules.builtin) or as files (modules.dep).
    func availableModules(release: String, among names: [String]) -> Set<String> {
        var text = ""
        for file in ["modules.builtin", "modules.dep"] {
            if let bytes = reader.readBytes(modulesRoot + "/\(release)/\(file)", limit: 16 << 20) {
                text += String(decoding: bytes, as: UTF8.self)
            }
        }
        var found: Set<String> = []
        for name in names {
            let dashed = name.replacingOccurrences(of: "_", with: "-")
            if text.contains("/\(name).ko") || text.contains("/\(dashed).ko") { found.insert(name) }
        }
        return found
    }
}

extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
