import HostKernel
import PCIBinding
import PCIInventory
import TextFormat

/// One thing `vfioctl doctor` found: what, the evidence, and the exact remedy.
public struct Finding: Sendable, Equatable {
    public enum Status: String, Sendable, Comparable {
        case ok, info, warning, problem

        var rank: Int { [.ok: 0, .info: 1, .warning: 2, .problem: 3][self] ?? 0 }
        public static func < (lhs: Status, rhs: Status) -> Bool { lhs.rank < rhs.rank }
    }

    /// Stable identifier, e.g. "iommu.enabled", "gpu.0000:01:00.0".
    public let id: String
    public let status: Status
    public let title: String
    public let evidence: [String]
    public let remedy: String?

    public init(id: String, status: Status, title: String, evidence: [String], remedy: String? = nil) {
        self.id = id
        self.status = status
        self.title = title
        self.evidence = evidence
        self.remedy = remedy
    }
}

/// What the doctor judges, gathered by `HostReadinessReader`. Plain data, so the rules are pure.
public struct HostReadiness: Sendable {
    public var inventory: PCIInventory
    public var kernelRelease: String?
    public var kernelCommandLine: String?
    /// Whether /proc/interrupts shows remapped ("IR-") interrupt domains.
    public var interruptRemapping: Bool?
    /// vfio_iommu_type1's allow_unsafe_interrupts parameter (nil when the module is not loaded).
    public var allowUnsafeInterrupts: Bool?
    /// Loaded modules of interest (from /sys/module).
    public var loadedModules: Set<String> = []
    /// Modules the running kernel has on disk or built in (from /lib/modules/RELEASE).
    public var availableModules: Set<String> = []
    public var vfioContainerNode: Bool = false
    /// /dev/iommu exists (CONFIG_IOMMUFD): the iommufd backend is there.
    public var iommufdNode: Bool = false
    /// /dev/vfio/devices exists (CONFIG_VFIO_DEVICE_CDEV): devices bound to vfio-pci get device files.
    public var vfioDeviceFiles: Bool = false
    public var kvmNode: Bool = false
    /// What /dev/kvm reports; nil with `kvmError` nil means it was not probed (not the live host).
    public var kvm: KVMSummary?
    /// Why probing /dev/kvm failed on the live host.
    public var kvmError: String?
    /// RLIMIT_MEMLOCK soft limit in bytes; nil for unlimited.
    public var memlockLimit: UInt64?
    public var memlockKnown = false
    public var plannedGuestMemory: UInt64 = 8 << 30
    /// The VM `doctor --vm-memory` judges: how many assigned devices, whether it has a vIOMMU,
    /// and the page it maps for DMA.
    public var plannedDevices = 1
    public var plannedVIOMMU = false
    public var plannedPageSize: UInt64 = 4096
    /// vfio_iommu_type1's dma_entry_limit (nil when the module is not loaded).
    public var dmaEntryLimit: UInt64?
    /// The narrowest IOMMU unit's guest address width in bits (Intel: MGAW from `cap`).
    public var iommuAddressWidth: Int?
    public var hugePages: [HugePagePool] = []
    public var transparentHugePages: String?
    /// Processes holding devices (open nodes, mapped BARs), by device.
    public var holders: [PCIAddress: [Holder]] = [:]
    /// The host CPU's physical address bits (/proc/cpuinfo "address sizes"); nil: unknown.
    public var physicalAddressBits: Int?
    /// `qemu-system-x86_64 --version`'s version ("7.2.22"); nil when none is on PATH (or not the live host).
    public var qemuVersion: String?
    /// Owners and modes of /dev/vfio/*, /dev/vfio/devices/* and /dev/iommu.
    public var deviceNodes: [DeviceNodeAccess] = []

    public init(inventory: PCIInventory) { self.inventory = inventory }
}

public struct KVMSummary: Sendable, Equatable {
    public var apiVersion: Int
    public var maxMemslots: Int
    public var readonlyMemory: Bool
    public var dirtyRingBytes: Int
    public init(apiVersion: Int, maxMemslots: Int, readonlyMemory: Bool, dirtyRingBytes: Int) {
        self.apiVersion = apiVersion
        self.maxMemslots = maxMemslots
        self.readonlyMemory = readonlyMemory
        self.dirtyRingBytes = dirtyRingBytes
    }
}

public struct HugePagePool: Sendable, Equatable {
    public var pageSize: UInt64
    public var total: Int
    public var free: Int
    public init(pageSize: UInt64, total: Int, free: Int) {
        self.pageSize = pageSize; self.total = total; self.free = free
    }
}

/// The rules: each looks at `HostReadiness` and says what it finds. Pure.
public enum Doctor {
    public static func examine(_ host: HostReadiness) -> [Finding] {
        var findings: [Finding] = []
        findings += iommu(host)
        findings += modules(host)
        findings += backends(host)
        findings += nodeAccess(host)
        findings += kvm(host)
        findings += memory(host)
        findings += dmaBudget(host)
        findings += kernelHistory(host)
        findings += acs(host)
        findings += gpus(host)
        findings += holders(host)
        findings += numa(host)
        findings += mmioWindow(host)
        findings += versions(host)
        return findings
    }

    /// On a host with more than one NUMA node, where each VFIO device sits: its VM's memory and
    /// vCPUs belong on the same node, or every DMA and interrupt crosses the socket interconnect.
    static func numa(_ host: HostReadiness) -> [Finding] {
        let devices = host.inventory.devices
        guard Set(devices.compactMap(\.numaNode)).count > 1 else { return [] }
        let assigned = devices.filter { device in device.isOnVFIO && device.numaNode != nil }
        var findings: [Finding] = []
        for device in assigned {
            guard let node = device.numaNode else { continue }
            let cpus = device.localCPUs.map { " (CPUs \($0))" } ?? ""
            findings.append(Finding(
                id: "numa.\(device.address)", status: .info, title: "\(device.address) is on NUMA node \(node)",
                evidence: ["numa_node \(node)" + cpus, "memory of its VM on another node makes every DMA and interrupt cross the interconnect"],
                remedy: "back the VM's memory and pin its vCPUs on node \(node): `numactl --membind=\(node) --cpunodebind=\(node) qemu-system-x86_64 ...`, or libvirt <numatune><memory mode='strict' nodeset='\(node)'/></numatune> with vCPUs pinned to \(device.localCPUs.map { "CPUs \($0)" } ?? "that node's CPUs")"))
        }
        let nodes = Set(assigned.compactMap(\.numaNode)).sorted()
        if nodes.count > 1 {
            findings.append(Finding(
                id: "numa.span", status: .warning, title: "Devices on vfio-pci sit on NUMA nodes \(nodes.map(String.init).joined(separator: ", "))",
                evidence: nodes.map { node in "node \(node): " + assigned.filter { $0.numaNode == node }.map(\.address.description).joined(separator: " ") },
                remedy: "give each VM the devices of one node and its memory on that node; a VM with devices from several nodes has remote DMA for some of them"))
        }
        return findings
    }

    /// The worst status among the findings: the doctor's verdict.
    public static func verdict(_ findings: [Finding]) -> Finding.Status {
        findings.map(\.status).max() ?? .ok
    }

    static func iommu(_ host: HostReadiness) -> [Finding] {
        let status = host.inventory.iommu
        var findings: [Finding] = []
        if status.isAvailable {
            findings.append(Finding(id: "iommu.enabled", status: .ok, title: "IOMMU enabled",
                                    evidence: ["\(status.groupCount) IOMMU groups", "IOMMU units: " + (status.units.isEmpty ? "none listed" : status.units.joined(separator: ", "))]
                                        + (host.kernelCommandLine.map { ["kernel command line: \($0)"] } ?? [])))
        } else {
            findings.append(Finding(id: "iommu.enabled", status: .problem, title: "No IOMMU groups: no device can be assigned",
                                    evidence: status.advice, remedy: "enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on (Intel); then reboot and run `vfioctl doctor` again"))
        }
        if let commandLine = host.kernelCommandLine, commandLine.split(separator: " ").contains("iommu=pt") {
            findings.append(Finding(id: "iommu.passthrough", status: .info, title: "iommu=pt: host devices bypass translation",
                                    evidence: ["kernel command line has iommu=pt"],
                                    remedy: nil))
        }
        if status.isAvailable {
            switch host.interruptRemapping {
            case .some(true):
                findings.append(Finding(id: "iommu.interrupt-remapping", status: .ok, title: "Interrupt remapping active",
                                        evidence: ["/proc/interrupts lists IR- (remapped) interrupt domains"]))
            case .some(false):
                let unsafe = host.allowUnsafeInterrupts == true
                findings.append(Finding(id: "iommu.interrupt-remapping", status: unsafe ? .warning : .problem,
                                        title: "No interrupt remapping: a device could inject interrupts",
                                        evidence: ["/proc/interrupts shows no IR- domains"]
                                            + (unsafe ? ["vfio_iommu_type1 allow_unsafe_interrupts=Y: VFIO accepts it anyway"] : ["vfio_iommu_type1 refuses devices with MSI without it"]),
                                        remedy: "enable interrupt remapping in the firmware (x2APIC/VT-d IR); as a last resort, and only for trusted devices, load vfio_iommu_type1 with allow_unsafe_interrupts=1"))
            case .none:
                break
            }
        }
        return findings
    }

    static func modules(_ host: HostReadiness) -> [Finding] {
        var findings: [Finding] = []
        let needed = ["vfio", "vfio_iommu_type1", "vfio_pci"]
        let missing = needed.filter { !host.loadedModules.contains($0) }
        if missing.isEmpty {
            findings.append(Finding(id: "vfio.modules", status: .ok, title: "vfio modules loaded", evidence: needed.map { "/sys/module/\($0)" }))
        } else {
            let unavailable = missing.filter { !host.availableModules.contains($0) }
            if unavailable.isEmpty {
                findings.append(Finding(id: "vfio.modules", status: .warning, title: "vfio modules not loaded (available)",
                                        evidence: ["not loaded: " + missing.joined(separator: ", ")],
                                        remedy: "modprobe vfio-pci (vfioctl bind loads it when needed)"))
            } else {
                findings.append(Finding(id: "vfio.modules", status: .problem, title: "vfio modules missing from this kernel",
                                        evidence: ["neither loaded nor found under /lib/modules: " + unavailable.joined(separator: ", ")],
                                        remedy: "install the kernel's modules package (Debian: linux-image-$(uname -r)) or a kernel built with CONFIG_VFIO_PCI"))
            }
        }
        findings.append(host.vfioContainerNode
            ? Finding(id: "vfio.container", status: .ok, title: "/dev/vfio/vfio present", evidence: ["/dev/vfio/vfio"])
            : Finding(id: "vfio.container", status: host.loadedModules.contains("vfio") ? .problem : .warning,
                      title: "/dev/vfio/vfio missing", evidence: ["no /dev/vfio/vfio"],
                      remedy: "load vfio (modprobe vfio) and check that devtmpfs or udev creates the node"))
        return findings
    }

    /// Which VFIO backends the host offers and what each gives: type1 (group and container)
    /// where /dev/vfio/vfio exists (CONFIG_VFIO_CONTAINER); iommufd where /dev/iommu exists
    /// (CONFIG_IOMMUFD) and devices get files (CONFIG_VFIO_DEVICE_CDEV); peer-to-peer DMA to a
    /// BAR through a dma-buf on iommufd from Linux 6.19 (IOMMU_IOAS_MAP of a BAR's PFNMAP
    /// mapping fails there). Never a problem alone: either backend serves.
    static func backends(_ host: HostReadiness) -> [Finding] {
        var have: [String] = [], missing: [String] = []
        if host.vfioContainerNode { have.append("type1 (group + container, /dev/vfio/vfio)") } else { missing.append("CONFIG_VFIO_CONTAINER (no /dev/vfio/vfio)") }
        if host.iommufdNode {
            if host.vfioDeviceFiles || !host.inventory.devices.contains(where: \.isOnVFIO) {
                have.append("iommufd (/dev/iommu, device files in /dev/vfio/devices)")
            } else {
                missing.append("CONFIG_VFIO_DEVICE_CDEV (/dev/iommu exists, but devices bound to vfio-pci get no device file)")
            }
        } else {
            missing.append("CONFIG_IOMMUFD (no /dev/iommu)")
        }
        let version = host.kernelRelease.flatMap { KernelVersion(release: $0) }
        let dmabuf = host.iommufdNode && version.map { $0 >= KernelVersion(6, 19) } == true
        var evidence = have.map { "available: \($0)" } + missing.map { "missing: \($0)" }
        if host.iommufdNode {
            evidence.append(dmabuf
                ? "peer-to-peer under iommufd: BARs exported as dma-bufs (VFIO_DEVICE_FEATURE_DMA_BUF, kernel 6.19 or later; needs CONFIG_VFIO_PCI_DMABUF)"
                : "peer-to-peer under iommufd: needs kernel 6.19 or later (dma-buf export of BARs); this kernel is \(host.kernelRelease ?? "unknown")")
        }
        let title = have.isEmpty ? "No VFIO backend" : "VFIO backends: " + (host.vfioContainerNode ? ["type1"] : []).joined() +
            (host.vfioContainerNode && host.iommufdNode ? ", " : "") + (host.iommufdNode ? "iommufd" : "")
        return [Finding(id: "vfio.backends", status: have.isEmpty ? .warning : .info, title: title, evidence: evidence,
                        remedy: missing.isEmpty ? nil : "vfioctl uses whichever exists (--backend auto); for iommufd build the kernel with " +
                            missing.compactMap { $0.split(separator: " ").first.map(String.init) }.joined(separator: " and "))]
    }

    static func kvm(_ host: HostReadiness) -> [Finding] {
        guard host.kvmNode else {
            return [Finding(id: "kvm", status: .problem, title: "No /dev/kvm", evidence: ["/dev/kvm does not exist"],
                            remedy: "enable VT-x/AMD-V in the firmware and load kvm_intel or kvm_amd")]
        }
        if let kvm = host.kvm {
            return [Finding(id: "kvm", status: .ok, title: "KVM available",
                            evidence: ["API version \(kvm.apiVersion)", "\(kvm.maxMemslots) memslots", "read-only memory: \(kvm.readonlyMemory ? "yes" : "no")",
                                       "dirty ring: " + (kvm.dirtyRingBytes > 0 ? "up to \(kvm.dirtyRingBytes) bytes" : "no")])]
        }
        if let error = host.kvmError {
            return [Finding(id: "kvm", status: .warning, title: "/dev/kvm present but not usable here",
                            evidence: [error], remedy: "run as root or join the kvm group")]
        }
        // The reader opens /dev/kvm only on the live host: a copied or generated tree has the node
        // (a plain file will do) but nothing to ask, and that is no fault of the host.
        return [Finding(id: "kvm", status: .info, title: "/dev/kvm present (not probed: not the live host)",
                        evidence: ["/dev/kvm exists under the given dev root; KVM's capabilities are read only on the live host"])]
    }

    /// What a VM with `host.plannedGuestMemory` of RAM needs from the host: memlock for pinning
    /// all of it, and huge pages to back it (also `vfioctl vm config`'s host section).
    public static func memory(_ host: HostReadiness) -> [Finding] {
        var findings: [Finding] = []
        let planned = host.plannedGuestMemory
        if host.memlockKnown {
            if let limit = host.memlockLimit, limit < planned {
                findings.append(Finding(id: "memory.memlock", status: .warning,
                                        title: "RLIMIT_MEMLOCK below the memory a VM would pin",
                                        evidence: ["memlock limit \(bytes(limit)); a VM with \(bytes(planned)) of RAM pins all of it for DMA"],
                                        remedy: "raise it for the VMM: `ulimit -l unlimited`, LimitMEMLOCK=infinity in its systemd unit, or memlock in /etc/security/limits.conf"))
            } else {
                findings.append(Finding(id: "memory.memlock", status: .ok, title: "RLIMIT_MEMLOCK allows pinning guest RAM",
                                        evidence: ["memlock limit " + (host.memlockLimit.map(bytes) ?? "unlimited") + " for \(bytes(planned)) of guest RAM"]))
            }
        }
        let usable = host.hugePages.filter { $0.free > 0 }
        if usable.isEmpty {
            findings.append(Finding(id: "memory.hugepages", status: .info, title: "No free huge pages reserved",
                                    evidence: host.hugePages.map { "\(bytes($0.pageSize)) pages: \($0.total) total, \($0.free) free" }
                                        + (host.transparentHugePages.map { ["transparent huge pages: \($0)"] } ?? []),
                                    remedy: hugePageRemedy(planned)))
        } else {
            findings.append(Finding(id: "memory.hugepages", status: .ok, title: "Huge pages reserved",
                                    evidence: usable.map { "\(bytes($0.pageSize)) pages: \($0.free) free of \($0.total)" }))
        }
        return findings
    }

    /// Enough 2 MiB pages for the planned guest RAM (rounded up to whole pages).
    static func hugePageRemedy(_ planned: UInt64) -> String {
        let page: UInt64 = 2 << 20
        let pages = planned / page + (planned % page == 0 ? 0 : 1)
        let (total, overflow) = pages.multipliedReportingOverflow(by: page)
        return "reserve some for guest RAM, e.g. `echo \(pages) > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`"
            + (overflow ? "" : " (\(bytes(total)) of 2 MiB pages)")
    }

    /// The whole VM's DMA needs (VMDMABudget) against this host's limits.
    static func dmaBudget(_ host: HostReadiness) -> [Finding] {
        let budget = VMDMABudget(.init(
            guestMemory: host.plannedGuestMemory, devices: host.plannedDevices, vIOMMU: host.plannedVIOMMU,
            pageSize: host.plannedPageSize, memlockLimit: host.memlockKnown ? host.memlockLimit : nil,
            dmaEntryLimit: host.dmaEntryLimit, addressWidth: host.iommuAddressWidth))
        let vm = "\(bytes(host.plannedGuestMemory)) of RAM, \(host.plannedDevices) device\(host.plannedDevices == 1 ? "" : "s")" + (host.plannedVIOMMU ? ", vIOMMU" : "")
        var evidence = ["a VM with \(vm)"]
        var remedies: [String] = []
        let needed = budget.memlockNeeded.map(bytes) ?? "more than 16 EiB"
        // One VFIO container pins the RAM once: memory.memlock judges that. Only a vIOMMU with
        // several devices multiplies it, and that is judged here.
        let multiplied = host.plannedVIOMMU && host.plannedDevices > 1
        if multiplied, budget.memlockFits == false {
            evidence.append("memlock: needs \(needed) (libvirt's rule: RAM once per device with a vIOMMU + 1 GiB), limit \(host.memlockLimit.map(bytes) ?? "unlimited")")
            remedies.append("raise RLIMIT_MEMLOCK to \(needed) or more for the VMM (LimitMEMLOCK= in its unit)")
        } else {
            evidence.append("memlock: needs \(needed), limit " + (host.memlockKnown ? (host.memlockLimit.map(bytes) ?? "unlimited") : "unknown") + (multiplied ? "" : " (judged in memory.memlock)"))
        }
        let mappings = "DMA mappings per container: up to \(budget.mappingsPerContainer)" + (host.plannedVIOMMU ? " (the guest maps \(bytes(max(host.plannedPageSize, 4096))) pages one by one)" : "")
        if let limit = host.dmaEntryLimit {
            evidence.append(mappings + ", dma_entry_limit \(limit)")
            if budget.mappingsFit == false {
                remedies.append("load vfio_iommu_type1 with dma_entry_limit=\(budget.mappingsPerContainer) (or back the guest with huge pages it maps whole)")
            }
        } else {
            evidence.append(mappings + ", dma_entry_limit unknown (vfio_iommu_type1 not loaded)")
        }
        let top = budget.highestAddress.map { $0.hex() } ?? "beyond 64 bits"
        if let width = host.iommuAddressWidth {
            evidence.append("guest RAM ends at \(top); the IOMMU translates \(width)-bit addresses")
            if budget.addressFits == false {
                remedies.append("give the VM less RAM, or use a host whose IOMMU has a wider address width: IOVA = guest physical address must stay below 2^\(width)")
            }
        }
        let fits = (!multiplied || budget.memlockFits != false) && budget.mappingsFit != false && budget.addressFits != false
        return [Finding(id: "dma.budget", status: fits ? .ok : .warning,
                        title: fits ? "DMA limits fit the planned VM" : "The planned VM exceeds a DMA limit",
                        evidence: evidence, remedy: remedies.isEmpty ? nil : remedies.joined(separator: "; "))]
    }

    static func kernelHistory(_ host: HostReadiness) -> [Finding] {
        guard let release = host.kernelRelease, let version = KernelVersion(release: release) else { return [] }
        var findings: [Finding] = []
        if KernelHistory.hasHugeFault(version) {
            findings.append(Finding(id: "kernel.huge-fault", status: .ok, title: "vfio-pci maps BARs with huge pages (huge_fault)",
                                    evidence: ["kernel \(release) >= 6.12"]))
        } else {
            findings.append(Finding(id: "kernel.huge-fault", status: .info, title: "vfio-pci maps BARs 4 KiB at a time",
                                    evidence: ["kernel \(release) < 6.12: no vfio-pci huge_fault; large BARs fault in slowly"],
                                    remedy: "a 6.12 or newer kernel maps BARs with 2 MiB and 1 GiB entries"))
        }
        switch KernelHistory.hugeFaultAlignment(version) {
        case .affected:
            findings.append(Finding(id: "kernel.huge-fault-alignment", status: .warning,
                                    title: "By version, this kernel lacks \"vfio/pci: Align huge faults to order\"",
                                    evidence: ["kernel \(release): the fix is in 6.15, 6.12.29 and 6.14.7 (commit c1d9dac0db16)",
                                               "without it, racing faults on one BAR can end in VM_FAULT_OOM and \"kvm run failed Bad address\" (bugzilla 220057)",
                                               "distribution kernels may carry the fix; `vfioctl bar touch` with the lab's fault counter shows the behaviour"],
                                    remedy: "update to 6.12.29+, 6.14.7+ or 6.15+"))
        case .fixed:
            findings.append(Finding(id: "kernel.huge-fault-alignment", status: .ok, title: "Huge faults aligned to order (fix present by version)",
                                    evidence: ["kernel \(release) includes c1d9dac0db16 (6.15, 6.12.29, 6.14.7)"]))
        case .notApplicable:
            break
        }
        if let finding = hugeBARMappings(host, version: version) { findings.append(finding) }
        if KernelHistory.hasMemslotZapRegression(version) {
            findings.append(Finding(id: "kernel.memslot-zap", status: .problem, title: "Memslot zap regression with assigned devices",
                                    evidence: ["kernel \(release): 5.1's commit 4e103134b862 zaps only the removed memslot's pages, which made guests with assigned GPUs unstable"],
                                    remedy: "update to 5.2.11 or later (reverted by d012a06ab1d2)"))
        } else {
            findings.append(Finding(id: "kernel.memslot-zap", status: .ok, title: "No memslot zap regression",
                                    evidence: ["kernel \(release) is outside 5.1-5.2.10, where memslot removal zapped too little for assigned devices"]))
        }
        return findings
    }

    /// Whether the THP mode lets the kernel map BARs with huge pages, for VMMs that madvise their
    /// BAR mappings (vfioctl's library) and for those that do not (QEMU). The rule is
    /// `HugeFaultHost`'s; nil where vfio-pci has no huge_fault (kernel.huge-fault says so).
    static func hugeBARMappings(_ host: HostReadiness, version: KernelVersion) -> Finding? {
        guard KernelHistory.hasHugeFault(version) else { return nil }
        let id = "kernel.thp-bar-mappings"
        guard let text = host.transparentHugePages else {
            return Finding(id: id, status: .warning, title: "No transparent huge pages: BARs are mapped 4 KiB at a time",
                           evidence: ["/sys/kernel/mm/transparent_hugepage is missing (a kernel built without THP)"],
                           remedy: "use a kernel with CONFIG_TRANSPARENT_HUGEPAGE=y (every distribution kernel has it)")
        }
        guard let mode = TransparentHugePageMode(sysfsText: text) else {
            return Finding(id: id, status: .info, title: "THP mode unreadable", evidence: ["transparent_hugepage/enabled: \(text)"])
        }
        let facts = HugeFaultHost(kernel: version, mode: mode)
        let evidence = ["transparent_hugepage/enabled: \(text)", "kernel \(version.release)"]
        let advised = facts.gate(for: .hugePage), plain = facts.gate(for: .none)
        let persist = "(at boot: transparent_hugepage=always on the kernel command line)"
        switch (advised.allowsHugeFaults, plain.allowsHugeFaults) {
        case (true, true) where advised == .modeBypassed:
            return Finding(id: id, status: .ok, title: "THP mode does not limit huge BAR mappings on this kernel",
                           evidence: evidence + ["kernels from 7.2 exempt PFN-mapped BARs from the THP mode (`\(mode.rawValue)` here)"])
        case (true, true):
            return Finding(id: id, status: .ok, title: "THP mode `always`: every VMM's BAR mappings can use 2 MiB and 1 GiB pages",
                           evidence: evidence)
        case (true, false):
            return Finding(id: id, status: .warning, title: "THP mode `madvise`: only VMMs that madvise their BAR mappings get huge pages",
                           evidence: evidence + ["kernels 6.12 to 7.1 apply the THP mode to BAR mappings; 7.2 and later do not",
                                                 "vfioctl's library gives every BAR mapping MADV_HUGEPAGE; QEMU does not, so its BARs fault in 4 KiB at a time"],
                           remedy: "for QEMU and other VMMs: `echo always > /sys/kernel/mm/transparent_hugepage/enabled` \(persist), or a 7.2+ kernel")
        default:
            return Finding(id: id, status: .warning, title: "THP mode `\(mode.rawValue)`: no VMM gets huge BAR mappings",
                           evidence: evidence + ["kernels 6.12 to 7.1 apply the THP mode to BAR mappings: with `never` every BAR page is a 4 KiB mapping, MADV_HUGEPAGE or not; 7.2 and later do not"],
                           remedy: "`echo madvise > /sys/kernel/mm/transparent_hugepage/enabled` (vfioctl's mappings) or `always` (every VMM) \(persist), or a 7.2+ kernel")
        }
    }

    /// Groups that hold endpoints from more than one slot are shared because something between
    /// them does not isolate (ACS missing or off); name the bridges responsible.
    static func acs(_ host: HostReadiness) -> [Finding] {
        let inventory = host.inventory
        var findings: [Finding] = []
        for group in inventory.groups {
            let endpoints = group.devices.compactMap { inventory.device($0) }.filter { !$0.isBridge }
            let slots = Set(endpoints.map { "\($0.address.domain):\($0.address.bus):\($0.address.device)" })
            guard slots.count > 1 else { continue }
            var culprits: [String] = []
            for endpoint in endpoints {
                for bridgeAddress in endpoint.parentBridges {
                    guard let bridge = inventory.device(bridgeAddress) else { continue }
                    let text: String
                    if let acs = bridge.accessControlServices {
                        guard !acs.isolates else { continue }
                        text = "\(bridgeAddress) has ACS but enabled only " + (acs.enabled.isEmpty ? "nothing" : acs.enabled.names.joined(separator: " "))
                    } else {
                        text = "\(bridgeAddress) (\(bridge.expressPortType?.name ?? "bridge")) has no ACS capability"
                    }
                    if !culprits.contains(text) { culprits.append(text) }
                }
            }
            findings.append(Finding(id: "acs.group-\(group.id)", status: .warning,
                                    title: "Group \(group.id) is shared by \(endpoints.count) devices in \(slots.count) slots",
                                    evidence: ["members: " + group.devices.map(\.description).joined(separator: " ")] + culprits,
                                    remedy: "assign the whole group (vfioctl bind ADDRESS --group), or move the device to a slot under a port with ACS"))
        }
        return findings
    }

    static func gpus(_ host: HostReadiness) -> [Finding] {
        let inventory = host.inventory
        var findings: [Finding] = []
        for gpu in inventory.devices where gpu.isDisplay {
            var evidence: [String] = []
            let name = [gpu.names.vendor, gpu.names.device].compactMap { $0 }.joined(separator: " ")
            evidence.append("\(gpu.address) \(name.isEmpty ? "display controller" : name), driver \(gpu.driver ?? "none")")
            evidence.append("reset methods: " + (gpu.resetMethods.isEmpty ? "none (the device may not reset between VM runs)" : gpu.resetMethods.joined(separator: " ")))
            if gpu.bootVGA == true { evidence.append("boot display (boot_vga=1): binding it takes the host's console") }
            var status: Finding.Status = .ok
            var remedy: String?
            if let groupID = gpu.iommuGroup, let group = inventory.group(groupID) {
                let others = group.devices.filter { $0 != gpu.address }
                evidence.append("IOMMU group \(groupID): " + (others.isEmpty ? "alone" : "with " + others.map { address in
                    "\(address) (\(inventory.device(address)?.driver ?? "no driver"))"
                }.joined(separator: ", ")))
                let companions = inventory.companions(of: gpu.address)
                if !companions.isEmpty {
                    evidence.append("companion functions: " + companions.map { "\($0.address) (\($0.driver ?? "no driver"), group \($0.iommuGroup.map(String.init) ?? "none"))" }.joined(separator: ", "))
                }
                if gpu.isOnVFIO && group.isViable && !needsSlot(gpu, in: inventory) {
                    evidence.append("ready: bound to \(gpu.driver ?? "vfio-pci") and the group is viable")
                } else {
                    status = gpu.bootVGA == true ? .warning : .info
                    remedy = bindCommand(for: gpu, in: inventory)
                    if !group.blockers.isEmpty {
                        evidence.append("blocking: " + group.blockers.map { "\($0.address) (\($0.driver ?? "?"))" }.joined(separator: ", "))
                    }
                }
            } else {
                status = .problem
                evidence.append("no IOMMU group")
                remedy = "enable the IOMMU first (see iommu.enabled)"
            }
            findings.append(Finding(id: "gpu.\(gpu.address)", status: status, title: "GPU \(gpu.address)", evidence: evidence, remedy: remedy))
        }
        return findings
    }

    /// The `vfioctl bind` line that makes `device` assignable: `--group` when its group has more
    /// than one endpoint (a group is assigned whole), `--force` for the boot display.
    public static func bindCommand(for device: PCIDevice, in inventory: PCIInventory) -> String {
        let endpoints = device.iommuGroup.flatMap { inventory.group($0) }.map { group in
            group.devices.compactMap { inventory.device($0) }.filter { !$0.isBridge }
        } ?? []
        return "vfioctl bind \(device.address)" + (endpoints.count > 1 ? " --group" : "")
            + (needsSlot(device, in: inventory) ? " --slot" : "") + (device.bootVGA == true ? " --force" : "")
    }

    /// Functions of the device's slot in other groups, not yet on vfio-pci, go to the VM too:
    /// `bind --slot` takes them all.
    static func needsSlot(_ device: PCIDevice, in inventory: PCIInventory) -> Bool {
        inventory.companions(of: device.address).contains { $0.iommuGroup != device.iommuGroup && !$0.isOnVFIO }
    }

    public static func bytes(_ value: UInt64) -> String { byteCount(value, bytesUnit: "bytes") }
}
