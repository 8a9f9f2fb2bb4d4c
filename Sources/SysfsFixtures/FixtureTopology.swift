import TextFormat
/// Why a host description cannot be built.
public enum FixtureError: Error, CustomStringConvertible, Sendable, Equatable {
    case duplicateAddress(FixtureAddress)
    case invalidDescription(String)
    case fileSystem(path: String, operation: String, errno: Int32)

    public var description: String {
        switch self {
        case .duplicateAddress(let address):
            "fixture describes \(address) more than once"
        case .invalidDescription(let reason):
            "invalid fixture description: \(reason)"
        case .fileSystem(let path, let operation, let code):
            "\(operation) \(path) failed: errno \(code)"
        }
    }
}

/// An inclusive address range that grows to cover what is merged into it.
struct AddressSpan: Hashable {
    var low: UInt64
    var high: UInt64

    mutating func merge(_ other: AddressSpan) {
        low = min(low, other.low)
        high = max(high, other.high)
    }

    /// Widened to the bridge window granularity (4 KiB for I/O, 1 MiB for memory).
    func aligned(to granularity: UInt64) -> AddressSpan {
        AddressSpan(low: low & ~(granularity - 1), high: high | (granularity - 1))
    }
}

/// The address windows a bridge forwards, derived from everything below it.
struct BridgeWindows: Hashable {
    var io: AddressSpan?
    var memory: AddressSpan?
    var prefetchable: AddressSpan?
    var prefetchableIs64Bit = false
    var highestBus: UInt8

    mutating func absorb(_ resource: DecodedResource) {
        let span = AddressSpan(low: resource.start, high: resource.end)
        switch resource.window {
        case .io: io.mergeOrSet(span)
        case .memory: memory.mergeOrSet(span)
        case .prefetchable:
            prefetchable.mergeOrSet(span)
            if resource.is64Bit { prefetchableIs64Bit = true }
        }
    }

    mutating func absorb(_ other: BridgeWindows) {
        if let span = other.io { io.mergeOrSet(span) }
        if let span = other.memory { memory.mergeOrSet(span) }
        if let span = other.prefetchable { prefetchable.mergeOrSet(span) }
        prefetchableIs64Bit = prefetchableIs64Bit || other.prefetchableIs64Bit
        highestBus = max(highestBus, other.highestBus)
    }
}

extension Optional where Wrapped == AddressSpan {
    mutating func mergeOrSet(_ span: AddressSpan) {
        if var existing = self {
            existing.merge(span)
            self = existing
        } else {
            self = span
        }
    }
}

/// A decoded address range a device claims, with the bridge window type that must forward it.
struct DecodedResource {
    enum Window { case io, memory, prefetchable }
    var start: UInt64
    var end: UInt64
    var window: Window
    var is64Bit: Bool
}

/// Where every device lives in the tree and what its bridges must forward: computed once, read by the writers.
struct FixtureTopology {
    let host: FixtureHost
    let devicesByAddress: [FixtureAddress: FixtureDevice]
    /// nil value: on a root bus.
    let parents: [FixtureAddress: FixtureAddress?]
    let physicalFunctionOfVirtualFunction: [FixtureAddress: FixtureAddress]
    /// Path components of each device directory, relative to the sysfs root.
    let deviceDirectories: [FixtureAddress: [String]]
    /// `pciDDDD:BB` directory names.
    let rootBusDirectories: [String]
    let bridgeWindows: [FixtureAddress: BridgeWindows]
    let childrenOf: [FixtureAddress: [FixtureAddress]]
    /// Slots (domain/bus/device) holding more than one non-VF function.
    let multiFunctionSlots: Set<UInt64>

    init(host: FixtureHost) throws {
        self.host = host
        var devicesByAddress: [FixtureAddress: FixtureDevice] = [:]
        for device in host.devices {
            guard devicesByAddress.updateValue(device, forKey: device.address) == nil else {
                throw FixtureError.duplicateAddress(device.address)
            }
        }
        self.devicesByAddress = devicesByAddress

        var physicalFunctionOf: [FixtureAddress: FixtureAddress] = [:]
        for device in host.devices {
            guard let sriov = device.sriov else { continue }
            guard sriov.numVFs <= sriov.totalVFs, sriov.vfStride > 0 || sriov.numVFs <= 1 else {
                throw FixtureError.invalidDescription("\(device.address): SR-IOV numVFs/stride out of range")
            }
            for index in 0..<sriov.numVFs {
                guard let vfAddress = sriov.virtualFunctionAddress(physicalFunction: device.address, index: index) else {
                    throw FixtureError.invalidDescription("\(device.address): VF \(index) routing ID overflows")
                }
                guard devicesByAddress[vfAddress] != nil else {
                    throw FixtureError.invalidDescription("\(device.address): VF \(index) at \(vfAddress) is not among the devices")
                }
                physicalFunctionOf[vfAddress] = device.address
            }
        }
        self.physicalFunctionOfVirtualFunction = physicalFunctionOf

        var bridgeForBus: [UInt64: FixtureAddress] = [:]
        for device in host.devices {
            guard let secondary = device.secondaryBus else { continue }
            guard secondary > device.address.bus else {
                throw FixtureError.invalidDescription("\(device.address): secondary bus must be above the bridge's own bus")
            }
            let key = UInt64(device.address.domain) << 8 | UInt64(secondary)
            if let other = bridgeForBus.updateValue(device.address, forKey: key) {
                throw FixtureError.invalidDescription("\(other) and \(device.address) both lead to bus \(secondary.hexDigits(2))")
            }
        }

        var parents: [FixtureAddress: FixtureAddress?] = [:]
        for device in host.devices {
            // The kernel parents a VF (even one on a virtual bus) to the PF's parent bridge.
            let anchor = physicalFunctionOf[device.address] ?? device.address
            let key = UInt64(anchor.domain) << 8 | UInt64(anchor.bus)
            parents[device.address] = bridgeForBus[key]
        }
        self.parents = parents

        var childrenOf: [FixtureAddress: [FixtureAddress]] = [:]
        for device in host.devices {
            if let parentAddress = parents[device.address] ?? nil {
                childrenOf[parentAddress, default: []].append(device.address)
            }
        }
        self.childrenOf = childrenOf.mapValues { $0.sorted() }

        var directories: [FixtureAddress: [String]] = [:]
        var rootBuses = Set<String>()
        for device in host.devices {
            var chain: [FixtureAddress] = [device.address]
            var cursor = device.address
            while let parentAddress = parents[cursor] ?? nil {
                guard chain.count <= devicesByAddress.count else {
                    throw FixtureError.invalidDescription("bridge loop above \(device.address)")
                }
                chain.append(parentAddress)
                cursor = parentAddress
            }
            let rootAnchor = physicalFunctionOf[cursor] ?? cursor
            let rootBus = "pci" + rootAnchor.busName
            rootBuses.insert(rootBus)
            directories[device.address] = ["devices", rootBus] + chain.reversed().map(\.description)
        }
        self.deviceDirectories = directories
        self.rootBusDirectories = rootBuses.sorted()

        var windows: [FixtureAddress: BridgeWindows] = [:]
        func computeWindows(of bridge: FixtureAddress) -> BridgeWindows {
            if let known = windows[bridge] { return known }
            let secondary = devicesByAddress[bridge]?.secondaryBus ?? bridge.bus
            var result = BridgeWindows(highestBus: secondary)
            for child in childrenOf[bridge] ?? [] {
                guard let childDevice = devicesByAddress[child] else { continue }
                result.highestBus = max(result.highestBus, child.bus)
                for resource in childDevice.decodedResources() { result.absorb(resource) }
                if childDevice.isBridge { result.absorb(computeWindows(of: child)) }
            }
            windows[bridge] = result
            return result
        }
        for device in host.devices where device.isBridge { _ = computeWindows(of: device.address) }
        self.bridgeWindows = windows

        var functionsPerSlot: [UInt64: Int] = [:]
        for device in host.devices where physicalFunctionOf[device.address] == nil {
            functionsPerSlot[device.address.slotKey, default: 0] += 1
        }
        self.multiFunctionSlots = Set(functionsPerSlot.filter { $0.value > 1 }.keys)
    }

    func isVirtualFunction(_ address: FixtureAddress) -> Bool {
        physicalFunctionOfVirtualFunction[address] != nil
    }

    /// Another non-VF function shares the slot: the header's multi-function bit is set.
    func isMultiFunction(_ address: FixtureAddress) -> Bool {
        !isVirtualFunction(address) && multiFunctionSlots.contains(address.slotKey)
    }
}

extension FixtureAddress {
    var slotKey: UInt64 { UInt64(domain) << 16 | UInt64(bus) << 8 | UInt64(device) }
}

extension FixtureDevice {
    /// Every range this device decodes (BARs, ROM, VF BAR apertures), for bridge windows.
    func decodedResources() -> [DecodedResource] {
        var resources = bars.map { bar in
            DecodedResource(start: bar.start, end: bar.end, window: bar.window, is64Bit: bar.is64Bit)
        }
        if let rom {
            resources.append(DecodedResource(start: rom.start, end: rom.start + rom.size - 1, window: .memory, is64Bit: false))
        }
        if let sriov {
            for bar in sriov.vfBARs {
                let end = bar.start + bar.size * UInt64(sriov.totalVFs) - 1
                resources.append(DecodedResource(start: bar.start, end: end, window: bar.window, is64Bit: bar.is64Bit))
            }
        }
        return resources
    }
}

extension FixtureBAR {
    var window: DecodedResource.Window {
        switch space {
        case .io: .io
        case .memory: isPrefetchable ? .prefetchable : .memory
        }
    }
}
