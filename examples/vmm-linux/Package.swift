// swift-tools-version: 6.1
// A small VMM that boots Linux with a passed-through PCI device, written only against vfioctl's
// library products (by path, as an outside project would use them).
import PackageDescription

let package = Package(
    name: "vmm-linux",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(name: "vfioctl", path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "vmm-linux",
            dependencies: [
                .product(name: "Passthrough", package: "vfioctl"),
                .product(name: "VFIO", package: "vfioctl"),
                .product(name: "KVM", package: "vfioctl"),
                .product(name: "PCIInventory", package: "vfioctl"),
            ]
        ),
    ]
)
