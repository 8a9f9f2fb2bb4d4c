/// What a host shows outside its PCI tree, for readers such as `vfioctl doctor`: the running
/// kernel and its command line, interrupts, the memlock limit, modules, device nodes and huge
/// pages. `write` lays it out as procfs, /dev and /lib/modules under their own roots, plus the
/// parts that live in sysfs (`module/`, `kernel/mm/`) under a fixture's sysfs root.
public struct HostEnvironment: Sendable, Hashable {
    /// A soft resource limit as /proc/PID/limits prints it.
    public enum Limit: Sendable, Hashable {
        case unlimited
        case bytes(UInt64)
    }

    /// One `kernel/mm/hugepages/hugepages-<size>kB` pool.
    public struct HugePagePool: Sendable, Hashable {
        public var sizeKiB: UInt64
        public var total: Int
        public var free: Int

        public init(sizeKiB: UInt64, total: Int, free: Int) {
            self.sizeKiB = sizeKiB
            self.total = total
            self.free = free
        }
    }

    /// `proc/sys/kernel/osrelease`, also the `lib/modules/<release>` directory; nil writes neither.
    public var kernelRelease: String?
    /// `proc/cmdline`; nil: no file.
    public var commandLine: String?
    /// `proc/interrupts` with remapped (`IR-IO-APIC`, `IR-PCI-MSIX`) domains when true, plain
    /// ones when false; nil: no file.
    public var interruptRemapping: Bool?
    /// The "Max locked memory" soft and hard limit in `proc/self/limits`; nil: no file.
    public var memlock: Limit?
    /// `module/<name>` directories in sysfs: loaded modules, by module name (underscores).
    public var loadedModules: [String]
    /// vfio_iommu_type1's `allow_unsafe_interrupts` parameter, written when that module is loaded.
    public var allowUnsafeInterrupts: Bool
    /// Modules the kernel has as files: lines of `lib/modules/<release>/modules.dep`.
    public var moduleFiles: [String]
    /// Modules built into the kernel: lines of `lib/modules/<release>/modules.builtin`.
    public var builtinModules: [String]
    /// `dev/vfio/vfio` (a plain file: readers only check that it exists).
    public var vfioContainerNode: Bool
    /// `dev/kvm` (a plain file).
    public var kvmNode: Bool
    public var hugePages: [HugePagePool]
    /// `kernel/mm/transparent_hugepage/enabled`, e.g. "always [madvise] never"; nil: no file.
    public var transparentHugePages: String?
    /// The CPU's physical address bits on the "address sizes" line of `proc/cpuinfo`; nil: no file.
    public var physicalAddressBits: Int? = nil
    /// `dev/iommu` (a plain file: readers only check that it exists), as CONFIG_IOMMUFD makes it.
    public var iommufdNode = false

    public init(
        kernelRelease: String? = nil,
        commandLine: String? = nil,
        interruptRemapping: Bool? = nil,
        memlock: Limit? = nil,
        loadedModules: [String] = [],
        allowUnsafeInterrupts: Bool = false,
        moduleFiles: [String] = [],
        builtinModules: [String] = [],
        vfioContainerNode: Bool = false,
        kvmNode: Bool = false,
        hugePages: [HugePagePool] = [],
        transparentHugePages: String? = nil
    ) {
        self.kernelRelease = kernelRelease
        self.commandLine = commandLine
        self.interruptRemapping = interruptRemapping
        self.memlock = memlock
        self.loadedModules = loadedModules
        self.allowUnsafeInterrupts = allowUnsafeInterrupts
        self.moduleFiles = moduleFiles
        self.builtinModules = builtinModules
        self.vfioContainerNode = vfioContainerNode
        self.kvmNode = kvmNode
        self.hugePages = hugePages
        self.transparentHugePages = transparentHugePages
    }

    /// The modules a passthrough host uses.
    public static let passthroughModules = ["vfio", "vfio_iommu_type1", "vfio_pci", "vfio_pci_core", "kvm", "kvm_intel"]

    /// A host ready for passthrough: a kernel with the huge-fault alignment fix, VT-d and
    /// interrupt remapping on, vfio and kvm loaded with their nodes, no memlock limit, and 8 GiB
    /// of free 2 MiB pages. Tests change one thing at a time from here.
    public static var ready: HostEnvironment {
        let release = "6.12.48+deb13-amd64"
        return HostEnvironment(
            kernelRelease: release,
            commandLine: "BOOT_IMAGE=/boot/vmlinuz-\(release) root=UUID=5c1e1c2a-8f0e-4d7e-9d0b-2f7a3c1b9e44 ro quiet intel_iommu=on",
            interruptRemapping: true,
            memlock: .unlimited,
            loadedModules: passthroughModules,
            moduleFiles: passthroughModules,
            vfioContainerNode: true,
            kvmNode: true,
            hugePages: [
                HugePagePool(sizeKiB: 2048, total: 4096, free: 4096),
                HugePagePool(sizeKiB: 1_048_576, total: 0, free: 0),
            ],
            transparentHugePages: "always [madvise] never"
        )
    }
}

/// Where `HostEnvironment.write` put the roots that sit outside sysfs.
public struct HostEnvironmentRoots: Sendable, Hashable {
    /// Pass where /proc would go (e.g. `vfioctl doctor --proc-root`).
    public let procRoot: String
    /// Pass where /dev would go (`--dev-root`).
    public let devRoot: String
    /// Pass where /lib/modules would go (`--modules-root`).
    public let modulesRoot: String
}

extension HostEnvironment {
    /// Writes the sysfs parts under `sysfsRoot` (an existing fixture tree) and `proc`, `dev` and
    /// `lib/modules` under `directory`, which is created when missing.
    @discardableResult
    public func write(sysfsRoot: String, rootsIn directory: String) throws -> HostEnvironmentRoots {
        let sysfs = TreeWriter(rootPath: sysfsRoot)
        try writeModules(sysfs)
        try writeMemoryManagement(sysfs)

        let base = TreeWriter(rootPath: directory)
        try base.makeDirectory([])
        let roots = HostEnvironmentRoots(procRoot: directory + "/proc", devRoot: directory + "/dev",
                                         modulesRoot: directory + "/lib/modules")
        try writeProc(base, under: ["proc"])
        try base.makeDirectory(["dev"])
        if vfioContainerNode {
            try base.makeDirectory(["dev", "vfio"])
            try base.write(["dev", "vfio", "vfio"], "", mode: 0o666)
        }
        if kvmNode { try base.write(["dev", "kvm"], "", mode: 0o660) }
        if iommufdNode { try base.write(["dev", "iommu"], "", mode: 0o660) }
        try base.makeDirectories(["lib", "modules"])
        if let kernelRelease {
            let directory = ["lib", "modules", kernelRelease]
            try base.makeDirectory(directory)
            try base.write(directory + ["modules.dep"], moduleFiles.map { Self.modulePath($0) + ":\n" }.joined())
            try base.write(directory + ["modules.builtin"], builtinModules.map { Self.modulePath($0) + "\n" }.joined())
        }
        return roots
    }

    private func writeModules(_ sysfs: TreeWriter) throws {
        try sysfs.makeDirectory(["module"])
        for name in loadedModules {
            // The fixture may already have the directory for a bound driver's module.
            try sysfs.makeDirectory(["module", name])
            try sysfs.write(["module", name, "initstate"], "live\n")
        }
        if loadedModules.contains("vfio_iommu_type1") {
            try sysfs.makeDirectory(["module", "vfio_iommu_type1", "parameters"])
            try sysfs.write(["module", "vfio_iommu_type1", "parameters", "allow_unsafe_interrupts"],
                            allowUnsafeInterrupts ? "Y\n" : "N\n", mode: 0o644)
        }
    }

    private func writeMemoryManagement(_ sysfs: TreeWriter) throws {
        try sysfs.makeDirectories(["kernel", "mm", "hugepages"])
        for pool in hugePages {
            let directory = ["kernel", "mm", "hugepages", "hugepages-\(pool.sizeKiB)kB"]
            try sysfs.makeDirectory(directory)
            try sysfs.write(directory + ["nr_hugepages"], "\(pool.total)\n", mode: 0o644)
            try sysfs.write(directory + ["free_hugepages"], "\(pool.free)\n")
            try sysfs.write(directory + ["resv_hugepages"], "0\n")
            try sysfs.write(directory + ["surplus_hugepages"], "0\n")
            try sysfs.write(directory + ["nr_overcommit_hugepages"], "0\n", mode: 0o644)
        }
        if let transparentHugePages {
            try sysfs.makeDirectories(["kernel", "mm", "transparent_hugepage"])
            try sysfs.write(["kernel", "mm", "transparent_hugepage", "enabled"], transparentHugePages + "\n", mode: 0o644)
        }
    }

    private func writeProc(_ writer: TreeWriter, under proc: [String]) throws {
        try writer.makeDirectory(proc)
        if let kernelRelease {
            try writer.makeDirectories(proc + ["sys", "kernel"])
            try writer.write(proc + ["sys", "kernel", "osrelease"], kernelRelease + "\n")
        }
        if let commandLine { try writer.write(proc + ["cmdline"], commandLine + "\n") }
        if let physicalAddressBits {
            try writer.write(proc + ["cpuinfo"], "processor\t: 0\nvendor_id\t: GenuineIntel\n"
                             + "address sizes\t: \(physicalAddressBits) bits physical, 48 bits virtual\n\n")
        }
        if let interruptRemapping { try writer.write(proc + ["interrupts"], Self.interrupts(remapped: interruptRemapping)) }
        try writer.makeDirectory(proc + ["self"])
        try writer.write(proc + ["self", "mountinfo"], Self.mountTable)
        if let memlock { try writer.write(proc + ["self", "limits"], Self.limits(memlock: memlock)) }
    }

    /// A mount table with no filesystem on a PCI device (proc only): what `bind` and `persist
    /// add` need to rule out the root disk on a fixture host.
    public static let mountTable = "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw\n"

    /// Writes `mountTable` as `procRoot`/self/mountinfo (for proc roots a test makes by hand).
    public static func writeMountTable(procRoot: String) throws {
        // An absolute path: its components from "/" down, each made when missing.
        try TreeWriter(rootPath: "").makeDirectories(procRoot.split(separator: "/").map(String.init) + ["self"])
        let writer = TreeWriter(rootPath: procRoot)
        try writer.write(["self", "mountinfo"], mountTable)
    }

    /// Where a module's file sits below `lib/modules/<release>`; file names use dashes where the
    /// kernel's do (vfio-pci.ko for module vfio_pci), which readers must accept.
    static func modulePath(_ module: String) -> String {
        let known: [String: String] = [
            "vfio": "kernel/drivers/vfio/vfio.ko",
            "vfio_iommu_type1": "kernel/drivers/vfio/vfio_iommu_type1.ko",
            "vfio_pci": "kernel/drivers/vfio/pci/vfio-pci.ko",
            "vfio_pci_core": "kernel/drivers/vfio/pci/vfio-pci-core.ko",
            "kvm": "kernel/arch/x86/kvm/kvm.ko",
            "kvm_intel": "kernel/arch/x86/kvm/kvm-intel.ko",
            "kvm_amd": "kernel/arch/x86/kvm/kvm-amd.ko",
        ]
        return known[module] ?? "kernel/drivers/misc/\(module).ko"
    }

    /// A two-CPU /proc/interrupts; only the domain names differ with remapping.
    static func interrupts(remapped: Bool) -> String {
        let prefix = remapped ? "IR-" : ""
        let rows: [(String, String, String)] = [
            ("0", "\(prefix)IO-APIC    2-edge     ", "timer"),
            ("8", "\(prefix)IO-APIC    8-edge     ", "rtc0"),
            ("9", "\(prefix)IO-APIC    9-fasteoi  ", "acpi"),
            ("122", "\(prefix)PCI-MSI-0000:00:01.0    0-edge     ", "PCIe PME, aerdrv"),
            ("139", "\(prefix)PCI-MSI-0000:00:02.0    0-edge     ", "i915"),
            ("141", "\(prefix)PCI-MSIX-0000:00:1f.3    0-edge     ", "snd_hda_intel:card0"),
        ]
        var text = "           CPU0       CPU1       \n"
        for (number, domain, name) in rows {
            text += String(repeating: " ", count: max(0, 4 - number.count)) + number + ":"
                + "         12          0  " + domain + name + "\n"
        }
        text += "NMI:          0          0   Non-maskable interrupts\n"
        text += "LOC:     104857      98304   Local timer interrupts\n"
        return text
    }

    /// /proc/self/limits as the kernel prints it (proc_pid_limits: "%-25s %-20s %-20s %-10s").
    static func limits(memlock: Limit) -> String {
        func column(_ text: String, _ width: Int) -> String {
            text + String(repeating: " ", count: max(0, width - text.count))
        }
        func value(_ limit: Limit) -> String {
            switch limit {
            case .unlimited: "unlimited"
            case .bytes(let bytes): String(bytes)
            }
        }
        let rows: [(String, Limit, Limit, String)] = [
            ("Max cpu time", .unlimited, .unlimited, "seconds"),
            ("Max file size", .unlimited, .unlimited, "bytes"),
            ("Max data size", .unlimited, .unlimited, "bytes"),
            ("Max stack size", .bytes(8 << 20), .unlimited, "bytes"),
            ("Max core file size", .bytes(0), .unlimited, "bytes"),
            ("Max resident set", .unlimited, .unlimited, "bytes"),
            ("Max processes", .bytes(96365), .bytes(96365), "processes"),
            ("Max open files", .bytes(1024), .bytes(524288), "files"),
            ("Max locked memory", memlock, memlock, "bytes"),
            ("Max address space", .unlimited, .unlimited, "bytes"),
            ("Max file locks", .unlimited, .unlimited, "locks"),
            ("Max pending signals", .bytes(96365), .bytes(96365), "signals"),
            ("Max msgqueue size", .bytes(819200), .bytes(819200), "bytes"),
            ("Max nice priority", .bytes(0), .bytes(0), ""),
            ("Max realtime priority", .bytes(0), .bytes(0), ""),
            ("Max realtime timeout", .unlimited, .unlimited, "us"),
        ]
        var text = column("Limit", 25) + " " + column("Soft Limit", 20) + " " + column("Hard Limit", 20) + " " + column("Units", 10) + "\n"
        for (name, soft, hard, units) in rows {
            text += column(name, 25) + " " + column(value(soft), 20) + " " + column(value(hard), 20) + " " + column(units, 10) + "\n"
        }
        return text
    }
}

extension TemporarySysfsTree {
    /// Writes `environment` into this tree: its sysfs parts in place, and proc, dev and
    /// lib/modules under `ROOT/.host-environment`, so `remove()` deletes them with the tree.
    /// (No sysfs reader looks at that name.)
    @discardableResult
    public func writeEnvironment(_ environment: HostEnvironment) throws -> HostEnvironmentRoots {
        try environment.write(sysfsRoot: rootPath, rootsIn: rootPath + "/.host-environment")
    }
}
