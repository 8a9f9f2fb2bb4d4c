import PCIInventory

/// A device as the boot-binding planner sees it.
public struct BootBindingDevice: Sendable, Equatable {
    /// Its address.
    public let address: PCIAddress
    /// Its vendor:device (nil when sysfs did not give them).
    public let model: PCIModelID?
    /// The firmware's boot display (sysfs boot_vga).
    public let isBootVGA: Bool
    /// A device with every fact given.
    public init(address: PCIAddress, model: PCIModelID?, isBootVGA: Bool = false) {
        self.address = address
        self.model = model
        self.isBootVGA = isBootVGA
    }

    /// The planner's view of an inventory device.
    public init(_ device: PCIDevice) {
        address = device.address
        model = device.vendorID.flatMap { vendor in device.deviceID.map { PCIModelID(vendor: vendor, device: $0) } }
        isBootVGA = device.bootVGA == true
    }
}

/// One finding of the boot-binding plan.
public struct BootBindingFinding: Sendable, Equatable, CustomStringConvertible {
    /// The finding's weight (the same scale as `persist check`'s).
    public let status: BootFinding.Status
    /// The device it is about, when one.
    public let address: PCIAddress?
    /// The file (and line) it is about.
    public let location: SourceLocation?
    /// What was found and what to do.
    public let text: String
    /// "[status] text".
    public var description: String { "[\(status.rawValue)] \(text)" }
}

/// For each device, which mechanisms bind it at boot and from which file; and what conflicts.
/// Pure: built from the devices present and the declarations read from the host.
public struct BootBindingPlan: Sendable, Equatable {
    /// Every statement, with the devices present that it selects.
    public let sources: [BootBindingSource]
    /// Address → the statements that bind it (in reading order).
    public let bindings: [PCIAddress: [BootBindingSource]]
    /// Conflicts, surprises and unreadable or malformed statements.
    public let findings: [BootBindingFinding]

    /// The statements binding `address`, in reading order.
    public func sources(for address: PCIAddress) -> [BootBindingSource] { bindings[address] ?? [] }

    /// Statements, not vfioctl's, that bind `address` to a driver other than vfio-pci: what
    /// `persist add` refuses to fight (two mechanisms racing to set one device's driver).
    public func blockersForPersistAdd(_ address: PCIAddress) -> [BootBindingSource] {
        sources(for: address).filter { !$0.mechanism.isVfioctl && $0.driver != BindPlan.targetDriver }
    }

    /// Statements, not vfioctl's, that bind `address` at all: what `persist add --force` leaves
    /// in place (and names).
    public func othersBinding(_ address: PCIAddress) -> [BootBindingSource] {
        sources(for: address).filter { !$0.mechanism.isVfioctl }
    }

    /// Plans `declarations` against `devices`.
    public static func plan(devices: [BootBindingDevice], declarations: BootBindingDeclarations) -> BootBindingPlan {
        var bindings: [PCIAddress: [BootBindingSource]] = [:]
        // What could not be read or understood is a warning: the binding it may hold is
        // unknown, which does not by itself stop a device from being passed through.
        var findings: [BootBindingFinding] = declarations.problems.map {
            BootBindingFinding(status: .warning, address: nil, location: $0.location, text: $0.description)
        }
        let byAddress = Dictionary(devices.map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })

        for source in declarations.sources {
            switch source.target {
            case .address(let address):
                guard byAddress[address] != nil else {
                    if source.mechanism == .driverctl || source.mechanism == .udevRule {
                        let undo = source.mechanism == .driverctl ? "`driverctl unset-override \(address)` removes it" : "remove the rule if the device is gone for good"
                        findings.append(BootBindingFinding(status: .warning, address: address, location: source.location,
                                                           text: "\(source.location): \(source.mechanism.rawValue) binds \(address) to \(source.driver), but no device \(address) exists: \(undo)"))
                    }
                    continue
                }
                bindings[address, default: []].append(source)
            case .model(let model):
                let caught = devices.filter { $0.model == model }
                for device in caught { bindings[device.address, default: []].append(source) }
                let key = source.mechanism == .kernelCommandLine ? "\(source.driver).ids=\(model)" : "ids=\(model)"
                if let bootVGA = caught.first(where: \.isBootVGA) {
                    findings.append(BootBindingFinding(status: .problem, address: bootVGA.address, location: source.location,
                                                       text: "\(source.location): \(key) also catches \(bootVGA.address), the host's boot display: binding it to \(source.driver) leaves the console dark; bind the other devices by address (`vfioctl persist add ADDRESS`) and drop \(model) from ids="))
                } else if caught.count > 1 {
                    let list = caught.map(\.address.description).joined(separator: " ")
                    findings.append(BootBindingFinding(status: .warning, address: nil, location: source.location,
                                                       text: "\(source.location): \(key) catches \(caught.count) devices of that model: \(list); if you meant only some, bind those by address (`vfioctl persist add ADDRESS`) and drop \(model) from ids="))
                }
            }
        }

        for address in bindings.keys.sorted() {
            let statements = bindings[address] ?? []
            // vfioctl's rule and its early files are one binding, made together by `persist add --early`.
            let mechanisms = Set(statements.map { $0.mechanism.isVfioctl ? BootBindingMechanism.vfioctlRule : $0.mechanism })
            guard mechanisms.count > 1 || Set(statements.map(\.driver)).count > 1 else { continue }
            let list = statements.map { "\($0.mechanism.rawValue) → \($0.driver) (\($0.location))" }.joined(separator: ", ")
            if Set(statements.map(\.driver)).count > 1 {
                findings.append(BootBindingFinding(status: .problem, address: address, location: statements.first?.location,
                                                   text: "\(address) is bound at boot to different drivers: \(list); which one wins depends on the order of boot, so keep one"))
            } else {
                findings.append(BootBindingFinding(status: .warning, address: address, location: statements.first?.location,
                                                   text: "\(address) is bound to \(statements[0].driver) by \(mechanisms.count) mechanisms: \(list); one is enough, and two must be changed together"))
            }
        }

        let initramfs = Set(declarations.initramfsModules)
        for softdep in declarations.softdeps where softdep.pre.contains("vfio_pci") && !initramfs.contains("vfio_pci") {
            findings.append(BootBindingFinding(status: .warning, address: nil, location: softdep.location,
                                               text: "\(softdep.location): softdep \(softdep.module) pre: vfio-pci, but vfio-pci is not in the initramfs (not in /etc/initramfs-tools/modules, dracut's force_drivers or add_drivers, rd.driver.pre=, or vfioctl's early files): if \(softdep.module) loads from the initramfs, vfio-pci is not there to load first; `vfioctl persist add --early ADDRESS` puts it there"))
        }
        return BootBindingPlan(sources: declarations.sources, bindings: bindings, findings: findings)
    }
}

extension BootBindingMechanism {
    /// vfioctl's own rule or early files.
    public var isVfioctl: Bool { self == .vfioctlRule || self == .vfioctlEarly }
}

extension BootFinding {
    /// A plan finding as a line of `persist check`.
    public init(_ finding: BootBindingFinding) {
        self.init(status: finding.status, text: finding.text)
    }
}

extension BootBindingPlan {
    /// The findings about `address`: those naming it, and those about a statement that binds it.
    public func findings(about address: PCIAddress) -> [BootBindingFinding] {
        let locations = Set(sources(for: address).map(\.location))
        return findings.filter { finding in
            finding.address == address || finding.location.map(locations.contains) == true
        }
    }
}
