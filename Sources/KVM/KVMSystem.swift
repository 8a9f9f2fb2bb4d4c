#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import SystemCalls
import SystemPackage

/// A KVM capability number (KVM_CAP_*), with a readable name for messages and `kvm info`.
public struct KVMCapability: Hashable, Sendable, CustomStringConvertible {
    /// The KVM_CAP_* number.
    public let rawValue: Int32
    /// Its name, for messages.
    public let name: String
    /// Capability `rawValue` called `name`.
    public init(_ rawValue: Int32, name: String) {
        self.rawValue = rawValue
        self.name = name
    }
    /// The capability's name.
    public var description: String { name }

    /// Recommended vCPUs per VM.
    public static let nrVCPUs = KVMCapability(KVM_CAP_NR_VCPUS, name: "KVM_CAP_NR_VCPUS")
    /// Most vCPUs per VM.
    public static let maxVCPUs = KVMCapability(KVM_CAP_MAX_VCPUS, name: "KVM_CAP_MAX_VCPUS")
    /// Highest vCPU id plus one.
    public static let maxVCPUID = KVMCapability(KVM_CAP_MAX_VCPU_ID, name: "KVM_CAP_MAX_VCPU_ID")
    /// Memslots per address space.
    public static let nrMemslots = KVMCapability(KVM_CAP_NR_MEMSLOTS, name: "KVM_CAP_NR_MEMSLOTS")
    /// Address spaces (2 on x86: normal and SMM).
    public static let multiAddressSpace = KVMCapability(KVM_CAP_MULTI_ADDRESS_SPACE, name: "KVM_CAP_MULTI_ADDRESS_SPACE")
    /// Read-only memslots.
    public static let readonlyMemory = KVMCapability(KVM_CAP_READONLY_MEM, name: "KVM_CAP_READONLY_MEM")
    /// KVM follows host page-table changes (required for device-memory slots).
    public static let syncMMU = KVMCapability(KVM_CAP_SYNC_MMU, name: "KVM_CAP_SYNC_MMU")
    /// An in-kernel irqchip.
    public static let irqchip = KVMCapability(KVM_CAP_IRQCHIP, name: "KVM_CAP_IRQCHIP")
    /// The per-vCPU dirty ring (its largest size in bytes).
    public static let dirtyLogRing = KVMCapability(KVM_CAP_DIRTY_LOG_RING, name: "KVM_CAP_DIRTY_LOG_RING")
    /// The dirty ring with acquire/release ordering.
    public static let dirtyLogRingAcquireRelease = KVMCapability(KVM_CAP_DIRTY_LOG_RING_ACQ_REL, name: "KVM_CAP_DIRTY_LOG_RING_ACQ_REL")
    /// KVM_CLEAR_DIRTY_LOG: dirty bits cleared explicitly, not on every read.
    public static let manualDirtyLogProtect2 = KVMCapability(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, name: "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2")
}

/// Whether /dev/kvm can be opened by this process: tests that need it are skipped otherwise.
public enum KVMAvailability {
    /// The KVM device node.
    public static let devicePath = "/dev/kvm"
    /// Checked once: opening and closing the node is the only reliable test (permissions, ACLs,
    /// a node without a loaded module all show up here).
    public static let present: Bool = {
        let fd = open(devicePath, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        _ = OwnedFileDescriptor(rawValue: fd)
        return true
    }()
}

/// An open /dev/kvm: the system-wide KVM API. Creates VMs.
public final class KVMSystem {
    let owned: OwnedFileDescriptor
    var fd: FileDescriptor { owned.borrowed }
    /// The node opened (/dev/kvm).
    public let path: String
    /// KVM_GET_API_VERSION; always `KVM_API_VERSION` once `init` has returned.
    public let apiVersion: Int32
    /// KVM_GET_VCPU_MMAP_SIZE: the size of each vCPU's shared kvm_run area (and what follows it).
    public let vcpuMmapSize: Int

    /// Opens `path` and checks the API version; throws with a hint when KVM is missing or not accessible.
    public init(path: String = KVMAvailability.devicePath) throws(KVMError) {
        // Owned: a failure below drops it, which closes it once.
        let owned = try OwnedFileDescriptor.open(FilePath(path), .readWrite) {
            KVMError.system(operation: "open \(path)", errno: $0)
        }
        let fd = owned.borrowed
        let version = try ioctlValue(fd, CKVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
        guard version == KVM_API_VERSION else {
            throw KVMError.unsupportedAPIVersion(found: version, expected: Int32(KVM_API_VERSION))
        }
        let mmapSize = try ioctlValue(fd, CKVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")
        guard Int(mmapSize) >= MemoryLayout<kvm_run>.size else {
            throw KVMError.invalidState("KVM_GET_VCPU_MMAP_SIZE is \(mmapSize), smaller than struct kvm_run (\(MemoryLayout<kvm_run>.size))")
        }
        self.apiVersion = version
        self.vcpuMmapSize = Int(mmapSize)
        self.owned = owned
        self.path = path
    }

    /// KVM_CHECK_EXTENSION on /dev/kvm: 0 when absent; for some capabilities a count or a size.
    /// Capabilities that differ per VM (memslots, dirty ring) are better asked of the VM.
    public func capability(_ capability: KVMCapability) throws(KVMError) -> Int {
        Int(try ioctlValue(fd, CKVM_CHECK_EXTENSION, UInt(capability.rawValue),
                           "KVM_CHECK_EXTENSION \(capability.name)"))
    }

    /// KVM_CREATE_VM with the default machine type.
    public func createVM() throws(KVMError) -> VirtualMachine {
        let vmFD = try ioctlValue(fd, CKVM_CREATE_VM, 0, "KVM_CREATE_VM")
        return try VirtualMachine(fd: OwnedFileDescriptor(rawValue: vmFD), system: self)
    }
}
