// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "vfioctl",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "vfioctl", targets: ["vfioctl"]),
        .library(name: "PCIInventory", targets: ["PCIInventory"]),
        .library(name: "PCIBinding", targets: ["PCIBinding"]),
        .library(name: "VFIO", targets: ["VFIO"]),
        .library(name: "KVM", targets: ["KVM"]),
        .library(name: "Passthrough", targets: ["Passthrough"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // Kernel uapi: structs and ioctl numbers from <linux/vfio.h> and <linux/kvm.h>.
        .target(name: "CLinuxUAPI"),
        // The one syscall layer: EINTR retry and errno-to-typed-error for any error type, ioctl
        // helpers, and an owning ~Copyable file descriptor (closed exactly once).
        .target(
            name: "SystemCalls",
            dependencies: ["CLinuxUAPI", .product(name: "SystemPackage", package: "swift-system")]
        ),
        // libpci (Debian libpci-dev) for names from pci.ids / hwdb.
        .systemLibrary(
            name: "CLibPCI",
            pkgConfig: "libpci",
            providers: [.apt(["libpci-dev"])]
        ),
        // pci_lookup_name is variadic; Swift cannot call it, so a C shim does.
        .target(name: "CPCINames", dependencies: ["CLibPCI"]),
        .target(
            name: "PCIInventory",
            dependencies: [
                "CPCINames",
                "CLinuxUAPI",
                "SystemCalls",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // Binding devices to vfio-pci: safety checks, journal, lock, rollback, udev persistence.
        .target(
            name: "PCIBinding",
            dependencies: [
                "PCIInventory",
                "CLinuxUAPI",
                "SystemCalls",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // The running kernel's version and the fault-path rules that depend on it and on the
        // host's THP settings (pure), with a thin reader of those facts.
        .target(name: "HostKernel", dependencies: ["CLinuxUAPI", "PCIInventory"]),
        // Pure placement and huge-fault planning for BAR mappings: no fds, unit-tested exhaustively.
        .target(name: "BARPlacement", dependencies: ["HostKernel"]),
        .target(
            name: "VFIO",
            dependencies: [
                "CLinuxUAPI",
                "SystemCalls",
                "PCIInventory",
                "BARPlacement",
                "HostKernel",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .target(
            name: "KVM",
            dependencies: [
                "CLinuxUAPI",
                "SystemCalls",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // `vfioctl doctor`: host readiness facts and the pure rules that judge them.
        .target(
            name: "Diagnostics",
            dependencies: ["PCIInventory", "PCIBinding", "KVM", "HostKernel"]
        ),
        // Passthrough composition: a bound device's BARs as KVM memslots (toggled to MMIO exits
        // served by VFIO region access), guest RAM DMA-mapped at IOVA = gpa, probe guests.
        .target(
            name: "Passthrough",
            dependencies: [
                "VFIO",
                "KVM",
                "HostKernel",
                "PCIInventory",
                "CLinuxUAPI",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // `vfioctl vm config`: pure planner from sysfs facts to QEMU, libvirt and Cloud Hypervisor settings.
        .target(name: "VMMConfig", dependencies: ["Diagnostics", "PCIInventory"]),
        // Test devices (edu, e1000e), probe and interrupt guests: for tests, examples and the
        // CLI's smoke commands; no library product depends on it.
        .target(name: "TestKit", dependencies: ["KVM", "VFIO", "Passthrough", "CLinuxUAPI"]),
        // Builds fake sysfs trees from descriptions: for tests and benchmarks.
        .target(name: "SysfsFixtures", dependencies: ["CLinuxUAPI", "SystemCalls"]),
        .target(
            name: "VfioctlCommands",
            dependencies: [
                "PCIInventory",
                "PCIBinding",
                "Diagnostics",
                "VFIO",
                "KVM",
                "BARPlacement",
                "HostKernel",
                "Passthrough",
                "VMMConfig",
                "TestKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "vfioctl", dependencies: ["VfioctlCommands"]),
        .executableTarget(
            name: "inventory-benchmark",
            dependencies: ["PCIInventory", "SysfsFixtures", "VfioctlCommands"]
        ),
        // Raw KVM ioctls in C, for kvm-benchmark's same-run comparison.
        .target(name: "CKVMReference"),
        .executableTarget(name: "kvm-benchmark", dependencies: ["KVM", "CKVMReference", "CLinuxUAPI", "TestKit"]),
        .executableTarget(
            name: "inspect-groups",
            dependencies: ["PCIInventory"],
            path: "examples/inspect-groups"
        ),
        .executableTarget(
            name: "bind-group",
            dependencies: ["PCIBinding", "PCIInventory"],
            path: "examples/bind-group"
        ),
        .executableTarget(
            name: "bar-faults",
            dependencies: ["VFIO", "BARPlacement", "PCIInventory"],
            path: "examples/bar-faults"
        ),
        .executableTarget(
            name: "kvm-passthrough",
            dependencies: ["Passthrough", "VFIO", "KVM", "PCIInventory", "TestKit"],
            path: "examples/kvm-passthrough"
        ),
        .testTarget(
            name: "PCIInventoryTests",
            dependencies: ["PCIInventory", "SysfsFixtures", "VfioctlCommands"]
        ),
        .testTarget(name: "DiagnosticsTests", dependencies: ["Diagnostics", "HostKernel", "PCIInventory", "SysfsFixtures", "VMMConfig"]),
        .testTarget(name: "PCIBindingTests", dependencies: ["PCIBinding", "PCIInventory", "SysfsFixtures"]),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "CLinuxUAPI", "TestKit"]),
        .testTarget(name: "PassthroughTests", dependencies: ["Passthrough", "KVM", "VFIO", "CLinuxUAPI", "TestKit"]),
        .testTarget(name: "BARPlacementTests", dependencies: ["BARPlacement", "HostKernel", "CLinuxUAPI", "PCIInventory", "SysfsFixtures", "VfioctlCommands"]),
        .testTarget(name: "VFIOTests", dependencies: ["VFIO", "BARPlacement", "CLinuxUAPI", "PCIInventory", "SysfsFixtures"]),
        .testTarget(name: "SystemCallsTests", dependencies: ["SystemCalls"]),
    ]
)
