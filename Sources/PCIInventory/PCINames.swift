import CPCINames
import TextFormat

/// Vendor, device, subsystem and class names from libpci (pci.ids, and udev's hwdb where libpci
/// was built with it). With no database every name is nil and callers show IDs only.
///
/// libpci caches names inside its handle and is not thread-safe, so one instance must be used
/// from one thread at a time; the inventory scan does so.
public final class PCINameDatabase {
    private let handle: OpaquePointer?
    private var buffer = [CChar](repeating: 0, count: 1024)

    /// `idsFile` overrides libpci's default pci.ids path (the environment variable
    /// `VFIOCTL_PCI_IDS` does the same for the CLI).
    public init(idsFile: String? = nil) {
        if let idsFile {
            handle = vfioctl_pci_names_open(idsFile)
        } else {
            handle = vfioctl_pci_names_open(nil)
        }
    }

    deinit { vfioctl_pci_names_close(handle) }

    /// The vendor's name, or nil when the database has none.
    public func vendorName(_ vendor: UInt16) -> String? {
        lookup { vfioctl_pci_vendor_name(handle, $0, $1, UInt32(vendor)) }
    }

    /// The device's name, or nil.
    public func deviceName(vendor: UInt16, device: UInt16) -> String? {
        lookup { vfioctl_pci_device_name(handle, $0, $1, UInt32(vendor), UInt32(device)) }
    }

    /// The subsystem's name, or nil.
    public func subsystemName(vendor: UInt16, device: UInt16, subsystemVendor: UInt16, subsystemDevice: UInt16) -> String? {
        lookup {
            vfioctl_pci_subsystem_name(handle, $0, $1, UInt32(vendor), UInt32(device),
                                       UInt32(subsystemVendor), UInt32(subsystemDevice))
        }
    }

    /// The class name lspci prints (the sub-class name, or the base class name).
    public func className(_ classCode: UInt32) -> String? {
        guard let name = lookup({ vfioctl_pci_class_name(handle, $0, $1, classCode) }) else { return nil }
        // When only the base class is known libpci appends the code ("Unassigned class [ffff]"),
        // which callers print themselves.
        let suffix = " [" + hex4(UInt16(truncatingIfNeeded: classCode >> 8)) + "]"
        return name.hasSuffix(suffix) ? String(name.dropLast(suffix.count)) : name
    }

    /// The programming interface's name for a 24-bit class code, or nil.
    public func programmingInterfaceName(_ classCode: UInt32) -> String? {
        lookup { vfioctl_pci_progif_name(handle, $0, $1, classCode) }
    }

    private func lookup(_ body: (UnsafeMutablePointer<CChar>, Int) -> Int32) -> String? {
        guard handle != nil else { return nil }
        return buffer.withUnsafeMutableBufferPointer { pointer -> String? in
            guard let base = pointer.baseAddress, body(base, pointer.count) != 0 else { return nil }
            // The C side always NUL-terminates within the buffer.
            return String(cString: base)
        }
    }
}
