#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemPackage

/// Everything the KVM layer can fail with. Each case says what was being done, so the message
/// printed as-is tells the user where it went wrong and, where it can, what to do about it.
public enum KVMError: Error, Equatable, CustomStringConvertible {
    /// A system call failed: `operation` names it and its object, e.g. "KVM_CREATE_VCPU 0".
    case system(operation: String, errno: Errno)
    /// The kernel's KVM API version is not the one this code was written against.
    case unsupportedAPIVersion(found: Int32, expected: Int32)
    /// A capability this operation needs is absent (or too small) on this host.
    case missingCapability(name: String, detail: String)
    /// The memslot table refused a change before the kernel was asked.
    case memslot(MemslotError)
    /// A dirty ring size the kernel would refuse.
    case invalidDirtyRingSize(bytes: Int, reason: String)
    /// The call is not valid in the object's current state (wrong order of set-up calls, say).
    case invalidState(String)
    /// An argument that is wrong on its face (a length that does not match the exit, say).
    case invalidArgument(String)

    /// What failed, with what to do where known.
    public var description: String {
        switch self {
        case let .system(operation, errno):
            return "\(operation) failed: \(errno)\(Self.hint(for: errno, operation: operation))"
        case let .unsupportedAPIVersion(found, expected):
            return "the kernel's KVM API version is \(found), this code needs \(expected)"
        case let .missingCapability(name, detail):
            return "this host's KVM lacks \(name): \(detail)"
        case let .memslot(error):
            return error.description
        case let .invalidDirtyRingSize(bytes, reason):
            return "dirty ring size \(bytes) bytes is invalid: \(reason)"
        case let .invalidState(message), let .invalidArgument(message):
            return message
        }
    }

    private static func hint(for errno: Errno, operation: String) -> String {
        guard operation.hasPrefix("open ") else { return "" }
        switch errno {
        case .noSuchFileOrDirectory, .noSuchAddressOrDevice, Errno(rawValue: ENODEV):
            return " (is KVM enabled? load kvm_intel or kvm_amd, and check virtualization is on in the firmware)"
        case .permissionDenied, .notPermitted:
            return " (run as root, or add the user to group kvm)"
        default:
            return ""
        }
    }
}
