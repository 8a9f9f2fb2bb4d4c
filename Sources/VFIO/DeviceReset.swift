import PCIInventory

/// One device's state after a reset: whether config space answers again.
public struct ResetDeviceState: Sendable, Equatable {
    /// The device's address.
    public let address: PCIAddress
    /// Its IOMMU group number.
    public let group: Int
    /// The vendor ID its config space returned after the reset.
    public let vendor: UInt16

    /// The state of the device at `address` in `group` whose config space returned `vendor`.
    public init(address: PCIAddress, group: Int, vendor: UInt16) {
        self.address = address
        self.group = group
        self.vendor = vendor
    }

    /// Whether the device came back: all ones means nothing answered on the bus, and zero is no
    /// vendor a device can have.
    public var answers: Bool { Self.answers(vendor: vendor) }

    /// The rule behind `answers`, for a vendor ID read any way.
    public static func answers(vendor: UInt16) -> Bool { vendor != 0xffff && vendor != 0 }
}

/// What a reset did: the method used (a bus reset becomes a hot reset when the function is not
/// alone there) and every device it reset, with its state afterwards.
public struct ResetOutcome: Sendable, Equatable {
    /// The method the reset used.
    public let method: ResetMethod
    /// Every device reset: the one asked for, or the whole affected set of a hot reset.
    public let devices: [ResetDeviceState]

    /// Whether every reset device answers again.
    public var allAnswer: Bool { devices.allSatisfy(\.answers) }
}

/// Why a reset failed, with the device and the step that failed.
public enum DeviceResetError: Error, Sendable, CustomStringConvertible {
    /// Choosing the method, opening the device or a function reset (VFIO_DEVICE_RESET) failed.
    case reset(PCIAddress, VFIOError)
    /// Opening the affected set into one DMA space or VFIO_DEVICE_PCI_HOT_RESET failed.
    case hotReset(PCIAddress, VFIOError)

    /// One line naming the device and the cause.
    public var description: String {
        switch self {
        case .reset(let address, let error): return "reset \(address): \(error.description)"
        case .hotReset(let address, let error): return "hot reset \(address): \(error.description)"
        }
    }
}

/// A device reset as a VMM or a fleet agent needs it, in one call: the method chosen from the
/// device's `reset_method` list, a bus reset turned into a hot reset when the function is not
/// alone on its bus, every affected device handed to the caller's approval before anything is
/// reset, each affected group opened into one DMA space (as the kernel requires of a hot reset's
/// caller), and each device's state read back.
public enum DeviceReset {
    /// Resets `address`. `offered` is the device's sysfs `reset_method` list. `approve` sees the
    /// devices the reset will touch (the device itself first, then, for a hot reset, its whole
    /// affected set) before anything is reset; an error it throws stops the reset and is
    /// rethrown as is. VFIO failures come as `DeviceResetError`.
    public static func perform(_ address: PCIAddress, requested: ResetMethod?, offered: [String], group: Int,
                               backend: VFIOBackendRequest, sysfsRoot: String, devVFIO: String = "/dev/vfio",
                               approve: ([AffectedDevice]) throws -> Void) throws -> ResetOutcome {
        var chosen: ResetMethod
        do throws(VFIOError) {
            chosen = try ResetMethod.choose(requested: requested, offered: offered, address: address)
        } catch { throw DeviceResetError.reset(address, error) }
        // Someone else using the device (a VM) would have it reset under them.
        try approve([AffectedDevice(address: address, group: group)])
        var affected: [AffectedDevice] = []
        do throws(VFIOError) {
            // Closed at the end of this block: a hot reset reopens its group with the others.
            let opened = try openVFIODevice(address, backend: backend, sysfsRoot: sysfsRoot, devVFIO: devVFIO)
            // The kernel resets the bus for one function only when it is alone there.
            if chosen == .bus && !opened.info.supportsReset { chosen = .hot }
            if chosen == .hot {
                affected = try opened.hotResetAffected()
            } else {
                try opened.reset(method: chosen, sysfsRoot: sysfsRoot)
                return ResetOutcome(method: chosen, devices: [try state(of: opened)])
            }
        } catch { throw DeviceResetError.reset(address, error) }
        try approve(affected)
        do throws(VFIOError) {
            let resolved = try backend.resolve(address, sysfsRoot: sysfsRoot)
            // One DMA space holds every affected device: one container with every group (type1),
            // or one iommufd (iommufd).
            let space = try makeDMASpace(resolved, devVFIO: devVFIO)
            let devices = try affected.map { (member) throws(VFIOError) in
                try space.openDevice(member.address, sysfsRoot: sysfsRoot, devVFIO: devVFIO)
            }
            guard let own = devices.first(where: { $0.address == address }) else {
                throw VFIOError.unsupported("\(address) is not in its own hot reset set")
            }
            try own.hotReset(groups: (space as? VFIOContainer)?.attachedGroups ?? [])
            var states: [ResetDeviceState] = []
            for member in devices { states.append(try state(of: member)) }
            return ResetOutcome(method: .hot, devices: states)
        } catch { throw DeviceResetError.hotReset(address, error) }
    }

    /// The device's state read back after its reset.
    static func state(of device: VFIODevice) throws(VFIOError) -> ResetDeviceState {
        ResetDeviceState(address: device.address, group: try device.iommuGroupNumber(), vendor: try device.vendorAfterReset())
    }
}
