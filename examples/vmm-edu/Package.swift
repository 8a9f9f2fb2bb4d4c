// swift-tools-version: 6.1
// A VMM's view of vfioctl: a separate package that depends on it by path and imports only its
// library products, as an outside project would.
import PackageDescription

let package = Package(
    name: "vmm-edu",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(name: "vfioctl", path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "vmm-edu",
            dependencies: [
                .product(name: "Passthrough", package: "vfioctl"),
                .product(name: "VFIO", package: "vfioctl"),
                .product(name: "KVM", package: "vfioctl"),
                .product(name: "PCIInventory", package: "vfioctl"),
            ]
        ),
    ]
)
