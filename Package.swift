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
        // Their public API names types from these, so they are products too: the host's
        // kernel facts and huge-page advice, and the owned file descriptor.
        .library(name: "HostKernel", targets: ["HostKernel"]),
        .library(name: "SystemCalls", targets: ["SystemCalls"]),
        // The kernel's uapi structs (kvm_regs, kvm_sregs, vfio_* ...) that KVM's and VFIO's API
        // pass through unchanged, as rust-vmm's kvm-bindings and vfio-bindings are public crates.
        .library(name: "CLinuxUAPI", targets: ["CLinuxUAPI"]),
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
        // Hex and byte-count text for people: one set of helpers, no dependencies.
        .target(name: "TextFormat"),
        .target(
            name: "PCIInventory",
            dependencies: [
                "CPCINames",
                "TextFormat",
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
                "TextFormat",
                "SystemCalls",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // The running kernel's version and the fault-path rules that depend on it and on the
        // host's THP settings (pure), with a thin reader of those facts.
        .target(name: "HostKernel", dependencies: ["CLinuxUAPI", "SystemCalls"]),
        // Page geometry shared by VFIO, KVM and Passthrough: the base page size, rounding,
        // congruence and the huge page a range holds. Pure, a leaf.
        .target(name: "PageAlignment"),
        // Pure placement and huge-fault planning for BAR mappings: no fds, unit-tested exhaustively.
        .target(name: "BARPlacement", dependencies: ["HostKernel", "PageAlignment", "TextFormat"]),
        .target(
            name: "VFIO",
            dependencies: [
                "CLinuxUAPI",
                "SystemCalls",
                "PCIInventory",
                "BARPlacement",
                "HostKernel",
                "PageAlignment",
                "TextFormat",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .target(
            name: "KVM",
            dependencies: [
                "CLinuxUAPI",
                "PageAlignment",
                "TextFormat",
                "SystemCalls",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // The guest's 64-bit PCI MMIO window: what the BARs need, each firmware's own rule (OVMF,
        // SeaBIOS), and the VMM settings that make them fit. Pure.
        .target(name: "GuestMMIOWindow", dependencies: ["TextFormat"]),
        // `vfioctl doctor`: host readiness facts and the pure rules that judge them.
        .target(
            name: "Diagnostics",
            dependencies: ["PCIInventory", "PCIBinding", "KVM", "HostKernel", "TextFormat", "GuestMMIOWindow", "BARPlacement", "VFIO"]
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
                "PageAlignment",
                "TextFormat",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // `vfioctl vm config`: pure planner from sysfs facts to QEMU, libvirt and Cloud Hypervisor settings.
        .target(name: "VMMConfig", dependencies: ["Diagnostics", "GuestMMIOWindow", "PCIInventory", "TextFormat", "VFIO", "HostKernel"]),
        // Test devices (edu, e1000e), probe and interrupt guests: for tests, examples and
        // vfioctl-lab-probe; no shipping product depends on it (Tests/check-shipping-targets).
        .target(name: "TestKit", dependencies: ["KVM", "VFIO", "Passthrough", "CLinuxUAPI", "TextFormat"]),
        // Builds fake sysfs trees from descriptions: for tests and benchmarks.
        .target(name: "SysfsFixtures", dependencies: ["CLinuxUAPI", "SystemCalls", "TextFormat"]),
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
                "TextFormat",
                "SystemCalls",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "vfioctl", dependencies: ["VfioctlCommands"]),
        // Checks that need a test device's registers or a probe guest (edu DMA, device-raised
        // interrupts, vm-smoke): built for the lab, which carries it into the guest; not a product.
        .executableTarget(
            name: "vfioctl-lab-probe",
            dependencies: [
                "VfioctlCommands",
                "PCIBinding",
                "TestKit",
                "Passthrough",
                "VFIO",
                "KVM",
                "HostKernel",
                "PCIInventory",
                "TextFormat",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "inventory-benchmark",
            dependencies: ["PCIInventory", "SysfsFixtures"]
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
            dependencies: ["PCIInventory", "SysfsFixtures"]
        ),
        .testTarget(name: "DiagnosticsTests", dependencies: ["Diagnostics", "HostKernel", "PCIInventory", "SysfsFixtures", "VMMConfig", "VFIO"]),
        .testTarget(name: "PCIBindingTests", dependencies: ["PCIBinding", "PCIInventory", "SysfsFixtures"]),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "CLinuxUAPI", "TestKit", "PageAlignment"]),
        .testTarget(name: "PassthroughTests", dependencies: ["Passthrough", "KVM", "VFIO", "TestKit", "PageAlignment"]),
        .testTarget(name: "BARPlacementTests", dependencies: ["BARPlacement", "HostKernel", "CLinuxUAPI", "PCIInventory", "SysfsFixtures"]),
        .testTarget(name: "PageAlignmentTests", dependencies: ["PageAlignment"]),
        // The CLI end to end (the built binary on fixture trees) and its conventions.
        .testTarget(name: "VfioctlCommandsTests", dependencies: ["VfioctlCommands", "PCIInventory", "SysfsFixtures", "BARPlacement", "HostKernel", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .testTarget(name: "TextFormatTests", dependencies: ["TextFormat"]),
        .testTarget(name: "GuestMMIOWindowTests", dependencies: ["GuestMMIOWindow"]),
        .testTarget(name: "VFIOTests", dependencies: ["VFIO", "BARPlacement", "CLinuxUAPI", "PCIInventory", "SysfsFixtures"]),
        .testTarget(name: "SystemCallsTests", dependencies: ["SystemCalls", "CLinuxUAPI"]),
    ]
)
