#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import SystemCalls
import SystemPackage

/// An MSI message as a device sends it: a write of `data` to `address`. On x86 the address
/// selects the destination local APIC and the data the vector (see `x86(vector:destination:)`).
public struct MSIMessage: Sendable, Hashable {
    /// The low 32 bits of the address the device writes (on x86: 0xFEE00000 | destination << 12).
    public var addressLow: UInt32
    /// The high 32 bits (0 on x86 unless the destination ID is extended).
    public var addressHigh: UInt32
    /// The value written (on x86: the vector, delivery mode and trigger).
    public var data: UInt32

    /// A message as the device's MSI or MSI-X entry holds it.
    public init(addressLow: UInt32, addressHigh: UInt32 = 0, data: UInt32) {
        self.addressLow = addressLow
        self.addressHigh = addressHigh
        self.data = data
    }

    /// x86's MSI address window (the architectural local APIC base, 0xFEE00000).
    public static let x86AddressBase: UInt32 = 0xfee0_0000

    /// A fixed, edge-triggered interrupt with `vector` for the local APIC with ID `destination`
    /// (physical destination mode): address 0xFEE00000 | destination << 12, data = vector.
    public static func x86(vector: UInt8, destination: UInt8 = 0) -> MSIMessage {
        MSIMessage(addressLow: x86AddressBase | UInt32(destination) << 12, data: UInt32(vector))
    }
}

/// Where a GSI goes: a pin of an in-kernel interrupt controller, or an MSI message.
public enum GSIRoute: Sendable, Hashable {
    /// x86 chips: 0 the master PIC, 1 the slave PIC, 2 the IOAPIC.
    case irqchip(chip: UInt32, pin: UInt32)
    /// KVM delivers the message as if the device had written it.
    case msi(MSIMessage)
}

/// The GSI routing table KVM_SET_GSI_ROUTING installs, kept here because the kernel only takes
/// a whole table: changing one route is one update here and one ioctl with everything. Pure.
///
/// It starts as KVM_CREATE_IRQCHIP leaves x86: GSIs 0-15 on a PIC pin and the IOAPIC pin of the
/// same number, 16-23 on the IOAPIC alone (so INTx lines keep working when MSI routes are
/// added). MSI routes take GSIs from 24 up.
public struct GSIRoutingTable: Sendable, Equatable {
    /// Routes by GSI; a GSI can reach several pins (a PIC and the IOAPIC).
    public private(set) var routes: [UInt32: [GSIRoute]]
    /// The first GSI handed out for MSI routes (above the IOAPIC's pins).
    public static let firstMSIGSI: UInt32 = 24
    /// How many GSIs the kernel takes (KVM_MAX_IRQ_ROUTES on x86).
    public let maxRoutes: UInt32

    /// The x86 defaults; `maxRoutes` is the kernel's limit (KVM_MAX_IRQ_ROUTES).
    public init(maxRoutes: UInt32 = 4096) {
        self.maxRoutes = maxRoutes
        var routes: [UInt32: [GSIRoute]] = [:]
        for gsi in UInt32(0)..<24 {
            var pins: [GSIRoute] = []
            if gsi < 8 { pins.append(.irqchip(chip: UInt32(KVM_IRQCHIP_PIC_MASTER), pin: gsi)) }
            else if gsi < 16 { pins.append(.irqchip(chip: UInt32(KVM_IRQCHIP_PIC_SLAVE), pin: gsi - 8)) }
            pins.append(.irqchip(chip: UInt32(KVM_IRQCHIP_IOAPIC), pin: gsi))
            routes[gsi] = pins
        }
        self.routes = routes
    }

    /// The MSI message on `gsi`, if it is an MSI route.
    public func msi(_ gsi: UInt32) -> MSIMessage? {
        guard case let .msi(message)? = routes[gsi]?.first else { return nil }
        return message
    }

    /// The lowest free GSI at or above `firstMSIGSI`, or nil when the table is full.
    public func firstFreeGSI() -> UInt32? {
        var gsi = Self.firstMSIGSI
        while gsi < maxRoutes {
            if routes[gsi] == nil { return gsi }
            gsi += 1
        }
        return nil
    }

    /// Points `gsi` at an MSI message, replacing what it had; refuses a GSI of the irqchip pins.
    public mutating func setMSI(_ gsi: UInt32, _ message: MSIMessage) throws(KVMError) {
        guard gsi >= Self.firstMSIGSI, gsi < maxRoutes else {
            throw .invalidArgument("GSI \(gsi) cannot carry an MSI route: use \(Self.firstMSIGSI)..<\(maxRoutes) (lower GSIs are the irqchip's pins)")
        }
        routes[gsi] = [.msi(message)]
    }

    /// Removes an MSI route (the irqchip's pins stay).
    public mutating func remove(_ gsi: UInt32) throws(KVMError) {
        guard gsi >= Self.firstMSIGSI, routes[gsi] != nil else { throw .invalidArgument("GSI \(gsi) has no MSI route to remove") }
        routes[gsi] = nil
    }

    /// Every (gsi, route) in GSI order: the entries KVM_SET_GSI_ROUTING gets.
    public var entries: [(gsi: UInt32, route: GSIRoute)] {
        routes.keys.sorted().flatMap { gsi in (routes[gsi] ?? []).map { (gsi, $0) } }
    }
}

/// The in-kernel interrupt controllers of a VM (KVM_CREATE_IRQCHIP: on x86 a PIC pair, an IOAPIC
/// and a local APIC per vCPU), their GSI routes, and irqfds: eventfds whose signal KVM turns into
/// a guest interrupt inside the kernel, so a device interrupt reaches the guest with no exit to
/// userspace. A VFIO device's MSI/MSI-X eventfds go to MSI routes; its INTx eventfd goes to an
/// IOAPIC pin with a resample eventfd that KVM signals when the guest ends the interrupt (EOI),
/// which VFIO takes as the unmask.
///
/// Holds the VM. Not thread-safe: one thread at a time changes routes (vCPUs may run meanwhile).
public final class InterruptController {
    /// The VM whose irqchip this is (held).
    public let vm: VirtualMachine
    /// The routes as the kernel has them.
    public private(set) var routing = GSIRoutingTable()
    /// Assigned irqfds: (eventfd, gsi), with the resample eventfd if any.
    public private(set) var irqfds: [IRQFD] = []

    /// An eventfd wired to a GSI.
    public struct IRQFD: Sendable, Equatable {
        /// The eventfd's descriptor when it was assigned.
        public let eventFD: Int32
        /// The GSI it raises.
        public let gsi: UInt32
        /// The resample eventfd's descriptor (level-triggered lines only).
        public let resampleFD: Int32?
    }

    /// KVM_CREATE_IRQCHIP. Must come before the first vCPU (the vCPUs' local APICs are made with them).
    public init(vm: VirtualMachine) throws(KVMError) {
        guard vm.vcpuCount == 0 else { throw .invalidState("KVM_CREATE_IRQCHIP must come before the first vCPU") }
        try ioctlValue(vm.fd, CKVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP")
        self.vm = vm
    }

    /// Adds an MSI route at the lowest free GSI; returns the GSI. One KVM_SET_GSI_ROUTING.
    public func addMSIRoute(_ message: MSIMessage) throws(KVMError) -> UInt32 {
        guard let gsi = routing.firstFreeGSI() else { throw .invalidState("all \(routing.maxRoutes) GSIs are in use") }
        try setMSIRoute(gsi, message)
        return gsi
    }

    /// Points `gsi` at a new MSI message (the guest reprogrammed an MSI-X entry, say): one
    /// KVM_SET_GSI_ROUTING; the irqfd on the GSI stays as it is. The table changes only if the
    /// kernel took it.
    public func setMSIRoute(_ gsi: UInt32, _ message: MSIMessage) throws(KVMError) {
        var next = routing
        try next.setMSI(gsi, message)
        try install(next)
    }

    /// Removes an MSI route (deassign its irqfd first).
    public func removeMSIRoute(_ gsi: UInt32) throws(KVMError) {
        guard !irqfds.contains(where: { $0.gsi == gsi }) else { throw .invalidState("GSI \(gsi) still has an irqfd: deassign it first") }
        var next = routing
        try next.remove(gsi)
        try install(next)
    }

    /// KVM_IRQFD: a signal on `eventFD` raises `gsi` in the guest. With `resample` (for a
    /// level-triggered IOAPIC pin, i.e. INTx), KVM lowers the line when the guest sends EOI and
    /// signals `resample` then, so the device side can unmask. The kernel holds its own
    /// reference to both files: they may be closed here afterwards.
    public func assignIRQFD(_ eventFD: FileDescriptor, gsi: UInt32, resample: FileDescriptor? = nil) throws(KVMError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventFD.rawValue)
        request.gsi = gsi
        if let resample {
            request.flags = CKVM_IRQFD_FLAG_RESAMPLE
            request.resamplefd = UInt32(bitPattern: resample.rawValue)
        }
        try ioctlStruct(vm.fd, CKVM_IRQFD, &request, "KVM_IRQFD (eventfd \(eventFD.rawValue) -> GSI \(gsi)\(resample == nil ? "" : ", resample"))")
        irqfds.append(IRQFD(eventFD: eventFD.rawValue, gsi: gsi, resampleFD: resample?.rawValue))
    }

    /// KVM_IRQFD with DEASSIGN.
    public func deassignIRQFD(_ eventFD: FileDescriptor, gsi: UInt32) throws(KVMError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventFD.rawValue)
        request.gsi = gsi
        request.flags = CKVM_IRQFD_FLAG_DEASSIGN
        try ioctlStruct(vm.fd, CKVM_IRQFD, &request, "KVM_IRQFD deassign (eventfd \(eventFD.rawValue), GSI \(gsi))")
        irqfds.removeAll { $0.eventFD == eventFD.rawValue && $0.gsi == gsi }
    }

    /// KVM_SET_GSI_ROUTING with every entry of `table`; adopts it once the kernel did.
    private func install(_ table: GSIRoutingTable) throws(KVMError) {
        let entries = table.entries
        var routes: [kvm_irq_routing_entry] = []
        for item in entries {
            var entry = kvm_irq_routing_entry()
            entry.gsi = item.gsi
            switch item.route {
            case let .irqchip(chip, pin):
                entry.type = UInt32(KVM_IRQ_ROUTING_IRQCHIP)
                entry.u.irqchip.irqchip = chip
                entry.u.irqchip.pin = pin
            case let .msi(message):
                entry.type = UInt32(KVM_IRQ_ROUTING_MSI)
                entry.u.msi.address_lo = message.addressLow
                entry.u.msi.address_hi = message.addressHigh
                entry.u.msi.data = message.data
            }
            routes.append(entry)
        }
        // kvm_irq_routing has no argsz: the kernel reads `nr` entries after the header.
        var buffer: FlexibleArrayBuffer<kvm_irq_routing, kvm_irq_routing_entry>
        do { buffer = try FlexibleArrayBuffer(header: kvm_irq_routing(), elements: routes, arrayOffset: Int(CKVM_IRQ_ROUTING_ENTRIES_OFFSET), countField: \.nr) } catch {
            throw .invalidArgument("KVM_SET_GSI_ROUTING with \(entries.count) routes: \(error)")
        }
        // Safety: the buffer is the kvm_irq_routing with its `nr` entries, as the kernel reads it.
        try SystemCall.ioctl(vm.fd, CKVM_SET_GSI_ROUTING, bytes: &buffer.bytes) {
            KVMError.system(operation: "KVM_SET_GSI_ROUTING (\(entries.count) routes)", errno: $0)
        }
        routing = table
    }
}

/// The KVM-VFIO pseudo device (KVM_CREATE_DEVICE, KVM_DEV_TYPE_VFIO). Registering each VFIO
/// group (or device cdev) file with it tells KVM the VM has assigned devices: on x86 it then
/// honours the guest's cache attributes for them (non-coherent DMA) and lets VFIO find the VM
/// (needed by some devices' drivers). Its descriptor is closed exactly once, in deinit; the
/// kernel drops the registrations with the VM.
public final class KVMVFIODevice {
    /// The VM the device belongs to (held).
    public let vm: VirtualMachine
    let owned: OwnedFileDescriptor
    var fd: FileDescriptor { owned.borrowed }
    /// The files registered, by descriptor number.
    public private(set) var files: [Int32] = []

    /// KVM_CREATE_DEVICE with KVM_DEV_TYPE_VFIO on `vm`.
    public init(vm: VirtualMachine) throws(KVMError) {
        var request = kvm_create_device()
        request.type = CKVM_DEV_TYPE_VFIO
        try ioctlStruct(vm.fd, CKVM_CREATE_DEVICE, &request, "KVM_CREATE_DEVICE (KVM_DEV_TYPE_VFIO)")
        self.vm = vm
        self.owned = OwnedFileDescriptor(rawValue: Int32(bitPattern: request.fd))
    }

    /// The device's descriptor, for a caller that sets other attributes itself.
    public var rawDescriptor: Int32 { fd.rawValue }

    /// KVM_DEV_VFIO_FILE_ADD (KVM_DEV_VFIO_GROUP_ADD on older headers, same values): registers
    /// a VFIO group file. The kernel refuses (EINVAL) a file that is not VFIO's.
    public func addFile(_ file: FileDescriptor) throws(KVMError) {
        try setFileAttribute(CKVM_DEV_VFIO_FILE_ADD, file, "KVM_DEV_VFIO_FILE_ADD")
        files.append(file.rawValue)
    }

    /// KVM_DEV_VFIO_FILE_DEL.
    public func deleteFile(_ file: FileDescriptor) throws(KVMError) {
        try setFileAttribute(CKVM_DEV_VFIO_FILE_DEL, file, "KVM_DEV_VFIO_FILE_DEL")
        files.removeAll { $0 == file.rawValue }
    }

    private func setFileAttribute(_ attribute: UInt64, _ file: FileDescriptor, _ name: String) throws(KVMError) {
        var descriptor = file.rawValue
        try withUnsafeMutablePointer(to: &descriptor) { (pointer) throws(KVMError) in
            var request = kvm_device_attr()
            request.group = CKVM_DEV_VFIO_FILE
            request.attr = attribute
            // The kernel reads an int32 descriptor from `addr`, valid for the call.
            request.addr = UInt64(UInt(bitPattern: pointer))
            try ioctlStruct(fd, CKVM_SET_DEVICE_ATTR, &request, "\(name) (fd \(file.rawValue)) on the KVM-VFIO device")
        }
    }
}
