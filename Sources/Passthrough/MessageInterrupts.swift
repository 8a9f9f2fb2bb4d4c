import KVM
import TextFormat
import VFIO

/// What a guest's interrupt programming asks of the VMM, decided by the pure state machines
/// (`MSIXVectorTable`, `MSIVectors`) and applied by `VFIOPCIDevice` with KVM and VFIO calls.
public enum InterruptAction: Sendable, Equatable {
    /// VFIO_DEVICE_SET_IRQS: wire vectors 0..<count of `index` (MSI or MSI-X) to one eventfd
    /// each; for the device this enables them.
    case enable(index: UInt32, vectors: Int)
    /// VFIO_DEVICE_SET_IRQS with no eventfds: the device's vectors of `index` off (their irqfds
    /// and routes are dropped first, by `unroute` actions before this one).
    case disable(index: UInt32)
    /// Deliver `vector` into the guest as `message`: a KVM MSI route on its GSI and an irqfd on
    /// its eventfd (added, or the route updated when already there).
    case route(index: UInt32, vector: Int, message: MSIMessage)
    /// Stop delivering `vector` (masked): its irqfd is deassigned; a signal meanwhile waits in
    /// the eventfd, and KVM injects it when the irqfd is assigned again (the pending bit).
    case unroute(index: UInt32, vector: Int)
    /// Something the guest asked that hardware would not do; the VMM logs it and does nothing.
    case refused(String)
}

/// One MSI-X table entry as the guest programs it.
public struct MSIXEntry: Sendable, Equatable {
    /// Message address, low dword (bits 1:0 are reserved, read as zero).
    public var addressLow: UInt32 = 0
    /// Message address, high dword.
    public var addressHigh: UInt32 = 0
    /// Message data.
    public var data: UInt32 = 0
    /// Vector control: bit 0 is the mask bit (set at reset, as the PCI spec requires).
    public var control: UInt32 = 1
    /// Whether the vector's mask bit is set.
    public var isMasked: Bool { control & 1 != 0 }
    /// The message KVM delivers for it.
    public var message: MSIMessage { MSIMessage(addressLow: addressLow, addressHigh: addressHigh, data: data) }
    /// A masked, zeroed entry (reset state).
    public init() {}
}

/// The guest's view of a device's MSI-X: the table, the PBA, the enable and function-mask bits
/// of Message Control, as the PCI spec defines them. Pure: every guest access returns the
/// `InterruptAction`s that make the host follow (a vector is delivered exactly while MSI-X is
/// enabled, the function is not masked and the vector's own mask bit is clear).
public struct MSIXVectorTable: Sendable, Equatable {
    /// Table entries the device has (its capability's table size).
    public let tableSize: Int
    /// Vectors VFIO can deliver (VFIO_DEVICE_GET_IRQ_INFO's count): never more than `tableSize`.
    public let deliverable: Int
    /// The entries, as the guest wrote them.
    public private(set) var entries: [MSIXEntry]
    /// Message Control's MSI-X Enable bit.
    public private(set) var isEnabled = false
    /// Message Control's Function Mask bit.
    public private(set) var isFunctionMasked = false
    /// The message each delivered vector is routed with now.
    public private(set) var routed: [Int: MSIMessage] = [:]
    /// Vectors whose interrupt arrived while masked (the PBA's bits), as the VMM reports them.
    public private(set) var pending: Set<Int> = []

    /// Message Control's enable bit.
    public static let enableBit: UInt16 = 0x8000
    /// Message Control's function-mask bit.
    public static let functionMaskBit: UInt16 = 0x4000
    /// Bytes per table entry.
    public static let entrySize: UInt64 = 16

    /// A table of `tableSize` masked entries, of which VFIO delivers the first `deliverable`.
    public init(tableSize: Int, deliverable: Int) {
        self.tableSize = max(0, min(tableSize, 2048))
        self.deliverable = max(0, min(deliverable, self.tableSize))
        self.entries = Array(repeating: MSIXEntry(), count: self.tableSize)
    }

    /// Message Control as the guest reads it: table size - 1, function mask, enable.
    public var messageControl: UInt16 {
        UInt16(max(tableSize - 1, 0)) | (isFunctionMasked ? Self.functionMaskBit : 0) | (isEnabled ? Self.enableBit : 0)
    }

    /// A write to Message Control: only the enable and function-mask bits are writable.
    public mutating func writeMessageControl(_ value: UInt16) -> [InterruptAction] {
        let enable = value & Self.enableBit != 0
        let wasEnabled = isEnabled
        isEnabled = enable
        isFunctionMasked = value & Self.functionMaskBit != 0
        var actions: [InterruptAction] = []
        if enable && !wasEnabled {
            guard deliverable > 0 else {
                isEnabled = false
                return [.refused("MSI-X enabled, but VFIO delivers none of its \(tableSize) vectors: left disabled")]
            }
            actions.append(.enable(index: PCIIRQ.msix, vectors: deliverable))
        }
        if !enable && wasEnabled {
            actions += reconcile()
            actions.append(.disable(index: PCIIRQ.msix))
            return actions
        }
        return actions + reconcile()
    }

    /// Whether `vector` is delivered into the guest now.
    public func isDelivered(_ vector: Int) -> Bool {
        isEnabled && !isFunctionMasked && vector < deliverable && !entries[vector].isMasked
    }

    /// A read of the table at `offset` (from the table's start): a dword or a qword, aligned;
    /// anything else reads all-ones, like an unsupported access on real hardware.
    public func readTable(offset: UInt64, width: AccessWidth) -> UInt64 {
        guard let (vector, field) = locate(offset: offset, width: width) else { return width.mask }
        let entry = entries[vector]
        let dwords = [entry.addressLow, entry.addressHigh, entry.data, entry.control]
        if width == .qword { return UInt64(dwords[field]) | UInt64(dwords[field + 1]) << 32 }
        return UInt64(dwords[field])
    }

    /// A write to the table at `offset`: an aligned dword or qword; anything else is refused.
    public mutating func writeTable(offset: UInt64, width: AccessWidth, value: UInt64) -> [InterruptAction] {
        guard let (vector, field) = locate(offset: offset, width: width) else {
            return [.refused("MSI-X table write of \(width.rawValue) bytes at \(offset.hex()) is not an aligned dword or qword inside the \(tableSize)-entry table: dropped")]
        }
        let dwords = width == .qword ? [(field, UInt32(truncatingIfNeeded: value)), (field + 1, UInt32(truncatingIfNeeded: value >> 32))]
                                     : [(field, UInt32(truncatingIfNeeded: value))]
        for (index, dword) in dwords {
            switch index {
            case 0: entries[vector].addressLow = dword & ~3
            case 1: entries[vector].addressHigh = dword
            case 2: entries[vector].data = dword
            default: entries[vector].control = dword & 1  // bits 31:1 are reserved
            }
        }
        var actions = reconcile()
        if !entries[vector].isMasked, isEnabled, vector >= deliverable {
            actions.append(.refused("MSI-X vector \(vector) unmasked, but VFIO delivers only \(deliverable) of \(tableSize): it stays silent"))
        }
        return actions
    }

    /// A read of the PBA at `offset`: a bit per vector, set while one is pending.
    public func readPBA(offset: UInt64, width: AccessWidth) -> UInt64 {
        guard width == .dword || width == .qword, offset % UInt64(width.rawValue) == 0 else { return width.mask }
        var value: UInt64 = 0
        for bit in 0..<(width.rawValue * 8) {
            let vector = Int(clamping: offset * 8) + bit
            if pending.contains(vector) { value |= 1 << UInt64(bit) }
        }
        return value
    }

    /// Records (or clears) that `vector`'s interrupt arrived while it was masked.
    public mutating func setPending(_ vector: Int, _ isPending: Bool) {
        guard vector >= 0, vector < tableSize else { return }
        if isPending { pending.insert(vector) } else { pending.remove(vector) }
    }

    /// The vector and its first dword for an aligned dword or qword access inside the table.
    private func locate(offset: UInt64, width: AccessWidth) -> (Int, Int)? {
        guard width == .dword || width == .qword, offset % UInt64(width.rawValue) == 0,
              offset < UInt64(tableSize) * Self.entrySize else { return nil }
        return (Int(offset / Self.entrySize), Int(offset % Self.entrySize) / 4)
    }

    /// Routes every vector that should be delivered (or whose message changed), unroutes every
    /// one that should not. A vector delivered again is no longer pending (KVM injects what
    /// waited in its eventfd when the irqfd comes back).
    private mutating func reconcile() -> [InterruptAction] {
        var actions: [InterruptAction] = []
        for vector in 0..<deliverable {
            if isDelivered(vector) {
                let message = entries[vector].message
                if routed[vector] != message {
                    routed[vector] = message
                    pending.remove(vector)
                    actions.append(.route(index: PCIIRQ.msix, vector: vector, message: message))
                }
            } else if routed.removeValue(forKey: vector) != nil {
                actions.append(.unroute(index: PCIIRQ.msix, vector: vector))
            }
        }
        return actions
    }
}

/// The guest's view of a device's plain MSI capability: enable, Multiple Message Enable, the
/// address and data, and the per-vector mask bits where the device has them. Pure, like
/// `MSIXVectorTable`. Register offsets are from the capability's start.
public struct MSIVectors: Sendable, Equatable {
    /// Message Control as the device has it (64-bit, per-vector masking, Multiple Message Capable).
    public let capabilityControl: UInt16
    /// Vectors VFIO can deliver.
    public let deliverable: Int
    /// MSI Enable.
    public private(set) var isEnabled = false
    /// Multiple Message Enable: log2 of the vectors enabled.
    public private(set) var multipleMessageEnable: UInt16 = 0
    /// Message address, low dword.
    public private(set) var addressLow: UInt32 = 0
    /// Message address, high dword (64-bit capable devices only).
    public private(set) var addressHigh: UInt32 = 0
    /// Message data (16 bits).
    public private(set) var data: UInt16 = 0
    /// Per-vector mask bits (devices with per-vector masking only).
    public private(set) var maskBits: UInt32 = 0
    /// The message each delivered vector is routed with now.
    public private(set) var routed: [Int: MSIMessage] = [:]
    /// Vectors VFIO was told to enable (0 while MSI is off in the host).
    public private(set) var enabledInHost = 0

    /// The device's capability: `control` is its Message Control, `deliverable` VFIO's count.
    public init(capabilityControl control: UInt16, deliverable: Int) {
        self.capabilityControl = control & 0x01fe  // read-only bits: 64-bit, per-vector mask, MMC
        self.deliverable = max(0, min(deliverable, 32))
    }

    /// Whether addresses are 64-bit.
    public var is64Bit: Bool { capabilityControl & 0x80 != 0 }
    /// Whether vectors have mask bits.
    public var hasPerVectorMask: Bool { capabilityControl & 0x100 != 0 }
    /// Vectors the device can do (Multiple Message Capable), at most what VFIO delivers.
    public var capableVectors: Int { min(1 << Int((capabilityControl >> 1) & 7), max(deliverable, 1)) }
    /// The capability's length in bytes.
    public var length: Int { 10 + (is64Bit ? 4 : 0) + (hasPerVectorMask ? 10 : 0) }
    /// Offset of the data register.
    var dataOffset: Int { is64Bit ? 12 : 8 }
    /// Offset of the mask bits (per-vector masking only).
    var maskOffset: Int { dataOffset + 4 }

    /// Message Control as the guest reads it.
    public var messageControl: UInt16 { capabilityControl | multipleMessageEnable << 4 | (isEnabled ? 1 : 0) }

    /// The dword at `offset` (0, 4, 8...) of the capability, as the guest reads it; the low 16
    /// bits of dword 0 (ID and next pointer) are left for the caller.
    public func readDword(_ offset: Int) -> UInt32 {
        switch offset {
        case 0: return UInt32(messageControl) << 16
        case 4: return addressLow
        case 8 where is64Bit: return addressHigh
        case dataOffset: return UInt32(data)
        case maskOffset where hasPerVectorMask: return maskBits
        default: return 0  // pending bits: VFIO keeps the device's vectors unmasked, so never set
        }
    }

    /// A dword written at `offset` of the capability (bytes the guest did not write hold what
    /// it reads, merged by the caller).
    public mutating func writeDword(_ offset: Int, _ value: UInt32) -> [InterruptAction] {
        var actions: [InterruptAction] = []
        switch offset {
        case 0:
            let control = UInt16(truncatingIfNeeded: value >> 16)
            var requested = (control >> 4) & 7
            let capable = UInt16(capableVectors.trailingZeroBitCount)
            if requested > capable {
                actions.append(.refused("MSI Multiple Message Enable asks for \(1 << Int(requested)) vectors; the device has \(capableVectors): \(capableVectors) enabled"))
                requested = capable
            }
            multipleMessageEnable = requested
            isEnabled = control & 1 != 0
        case 4: addressLow = value & ~3
        case 8 where is64Bit: addressHigh = value
        case dataOffset: data = UInt16(truncatingIfNeeded: value)
        case maskOffset where hasPerVectorMask: maskBits = value
        default: return []
        }
        return actions + reconcile()
    }

    /// The message vector `vector` sends: the data's low MME bits carry the vector number.
    public func message(_ vector: Int) -> MSIMessage {
        let low = UInt16((1 << Int(multipleMessageEnable)) - 1)
        let vectorData = (data & ~low) | (UInt16(truncatingIfNeeded: vector) & low)
        return MSIMessage(addressLow: addressLow, addressHigh: is64Bit ? addressHigh : 0, data: UInt32(vectorData))
    }

    /// Host enable state and routes follow the guest's registers.
    private mutating func reconcile() -> [InterruptAction] {
        var actions: [InterruptAction] = []
        let wanted = isEnabled ? min(1 << Int(multipleMessageEnable), capableVectors) : 0
        if wanted != enabledInHost {
            for vector in routed.keys.sorted() { actions.append(.unroute(index: PCIIRQ.msi, vector: vector)) }
            routed = [:]
            if enabledInHost > 0 { actions.append(.disable(index: PCIIRQ.msi)) }
            if wanted > 0 { actions.append(.enable(index: PCIIRQ.msi, vectors: wanted)) }
            enabledInHost = wanted
        }
        for vector in 0..<enabledInHost {
            let masked = hasPerVectorMask && maskBits & (1 << UInt32(vector)) != 0
            if !masked {
                let message = message(vector)
                if routed[vector] != message {
                    routed[vector] = message
                    actions.append(.route(index: PCIIRQ.msi, vector: vector, message: message))
                }
            } else if routed.removeValue(forKey: vector) != nil {
                actions.append(.unroute(index: PCIIRQ.msi, vector: vector))
            }
        }
        return actions
    }
}
