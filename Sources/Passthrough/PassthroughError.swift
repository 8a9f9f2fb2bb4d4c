import KVM
import TextFormat
import VFIO

/// Everything passthrough composition can fail with. The VFIO and KVM layers' errors are kept
/// whole, so their messages (which say what to do) reach the user unchanged.
public enum PassthroughError: Error, Equatable, CustomStringConvertible {
    case vfio(VFIOError)
    case kvm(KVMError)
    /// A BAR or area description the planner cannot use (overlapping areas, not page aligned...).
    case invalidBar(bar: Int, reason: String)
    /// The BAR's areas ask for guest addresses no single BAR base satisfies: their host mappings
    /// are not congruent with each other modulo the huge pages they need.
    case incongruentAreas(bar: Int)
    /// No place in the guest window is left for the BAR.
    case noRoom(bar: Int, size: UInt64, window: Range<UInt64>)
    /// An MMIO exit at an address no BAR covers (or one that straddles a BAR's end).
    case unroutedMMIO(address: UInt64, length: Int, isWrite: Bool)
    /// The guest did something the runner does not expect (an exit it does not serve, say).
    case unexpectedGuestExit(String)
    /// A DMA request that cannot work (IOVA beyond the device's DMA mask, a transfer too large).
    case dma(String)
    /// A device did not finish in time.
    case timedOut(String)
    /// A device the passthrough device model cannot present to a guest (a bridge, say).
    case unsupportedDevice(String)

    /// What went wrong, with what to do where known.
    public var description: String {
        switch self {
        case let .vfio(error): return error.description
        case let .kvm(error): return error.description
        case let .invalidBar(bar, reason): return "BAR \(bar): \(reason)"
        case let .incongruentAreas(bar):
            return "BAR \(bar): its mmap areas are not congruent with each other modulo the huge pages they need, so no guest address maps them all huge; map them with vfioctl's placement (VFIODevice.mapPlaced)"
        case let .noRoom(bar, size, window):
            return "BAR \(bar) (\(size.hex()) bytes) does not fit in the guest's device window \(window.lowerBound.hex())-\(window.upperBound.hex()) next to the other BARs"
        case let .unroutedMMIO(address, length, isWrite):
            return "guest MMIO \(isWrite ? "write" : "read") of \(length) bytes at \(address.hex()) hits no BAR"
        case let .unexpectedGuestExit(message), let .dma(message), let .timedOut(message), let .unsupportedDevice(message):
            return message
        }
    }
}

/// Runs a KVM-layer call, wrapping its error.
@inline(__always)
package func viaKVM<T: ~Copyable>(_ body: () throws(KVMError) -> T) throws(PassthroughError) -> T {
    do { return try body() } catch { throw .kvm(error) }
}

/// Runs a VFIO-layer call, wrapping its error.
@inline(__always)
package func viaVFIO<T: ~Copyable>(_ body: () throws(VFIOError) -> T) throws(PassthroughError) -> T {
    do { return try body() } catch { throw .vfio(error) }
}

