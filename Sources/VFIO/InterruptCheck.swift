#if canImport(Glibc)
import Glibc
#endif

/// One register write into a BAR.
public struct RegisterWrite: Sendable, Equatable {
    /// The BAR written (its VFIO region is `PCIRegion.bar(bar)`).
    public let bar: Int
    /// Byte offset in the BAR.
    public let offset: UInt64
    /// The value; its low `width` bytes are written.
    public let value: UInt64
    /// The access width.
    public let width: AccessWidth

    /// A write of `value` at `offset` in BAR `bar`.
    public init(bar: Int, offset: UInt64, value: UInt64, width: AccessWidth = .dword) {
        self.bar = bar
        self.offset = offset
        self.value = value
        self.width = width
    }
}

/// How to make one kind of device raise its interrupts on demand, as register writes (pure:
/// `InterruptCheck` does the writes). Device-specific recipes live outside the library
/// products (the test devices' registers are not shipped).
public protocol InterruptRaiser: Sendable {
    /// How many distinct vectors the device can be made to raise.
    var vectors: Int { get }
    /// How long to wait after the last interrupt before the IRQ index may be disabled.
    var settleMicroseconds: UInt32 { get }
    /// Writes that make the device ready to raise interrupts (after the eventfds are set).
    func setup() -> [RegisterWrite]
    /// Writes that raise `vector`.
    func raise(vector: Int) -> [RegisterWrite]
    /// Writes that clear `vector`'s interrupt at the device.
    func acknowledge(vector: Int) -> [RegisterWrite]
    /// Writes that leave the device quiet again.
    func teardown() -> [RegisterWrite]
}

/// Checks that a device's interrupts reach userspace: every vector of an IRQ index gets its own
/// eventfd (VFIO_DEVICE_SET_IRQS), then each vector is raised -- by the device itself through
/// an `InterruptRaiser`, or from the kernel side as a loopback -- and must arrive on its own
/// eventfd and no other. For INTx it also checks the kernel's automasking: a second interrupt
/// raised while the line is masked must wait, and arrive only when it is unmasked.
public struct InterruptCheck {
    /// Who raises the interrupts.
    public enum Source: Sendable {
        /// The device raises the interrupt (register writes from the raiser).
        case device(any InterruptRaiser)
        /// The kernel signals the eventfd (DATA_NONE | ACTION_TRIGGER): works on any device.
        case loopback
    }

    /// How one vector fared.
    public struct VectorResult: Sendable, Equatable {
        /// The vector number within the IRQ index.
        public let vector: Int
        /// The eventfd's count when it was read (1 = exactly one interrupt).
        public let signals: UInt64
        /// From the raising write (or trigger) to the eventfd becoming readable.
        public let microseconds: Double?
        /// Vectors other than this one that were signalled meanwhile (must be empty).
        public let strayVectors: [Int]
    }

    /// INTx automasking, seen from userspace.
    public struct MaskingResult: Sendable, Equatable {
        /// Signals seen while masked, within the quiet period (must be 0).
        public let signalsWhileMasked: UInt64
        /// Signals after unmasking with the second interrupt still pending (must be 1).
        public let signalsAfterUnmask: UInt64
    }

    /// The whole check's outcome.
    public struct Report: Sendable, Equatable {
        /// The IRQ index checked (`PCIIRQ`).
        public let index: UInt32
        /// Vectors the device has at that index.
        public let vectorCount: UInt32
        /// One result per vector checked, in order.
        public let vectors: [VectorResult]
        /// INTx's automasking (nil for MSI, MSI-X and loopback runs).
        public let masking: MaskingResult?
        /// Every vector arrived exactly once on its own eventfd, and INTx masking behaved.
        public var ok: Bool {
            vectors.allSatisfy { $0.signals == 1 && $0.strayVectors.isEmpty }
                && (masking.map { $0.signalsWhileMasked == 0 && $0.signalsAfterUnmask == 1 } ?? true)
        }
    }

    /// The device, bound to vfio-pci and opened.
    public let device: VFIODevice
    /// The IRQ index to check (`PCIIRQ.intx`, `.msi`, `.msix`).
    public let index: UInt32
    /// Who raises the interrupts.
    public let source: Source
    /// How long to wait for each interrupt, and how long "nothing arrives" is watched for.
    public var timeoutMilliseconds: Int32 = 2000
    /// How long a quiet eventfd is watched before it counts as "nothing arrived".
    public var quietMilliseconds: Int32 = 300

    /// A check of `index` on `device`, its interrupts raised by `source`.
    public init(device: VFIODevice, index: UInt32, source: Source) {
        self.device = device
        self.index = index
        self.source = source
    }

    /// Runs the check with `vectors` vectors (default: as many as the source can raise, for a
    /// loopback every vector the device has). Leaves the IRQ index disabled, the device quiet
    /// and its command register as it was, also on error.
    public func run(vectors requested: Int? = nil) throws(VFIOError) -> Report {
        let info = try device.irqInfo(index)
        guard info.count > 0, info.supportsEventFD else {
            throw .unsupported("\(device.address) has no \(PCIIRQ.name(index)) interrupt that can signal an eventfd (count \(info.count))")
        }
        let available: Int
        switch source {
        case .device(let recipe): available = min(recipe.vectors, Int(info.count))
        case .loopback: available = Int(info.count)
        }
        let count = requested ?? available
        guard count >= 1, count <= available else {
            throw .unsupported("\(device.address) can raise \(available) \(PCIIRQ.name(index)) vector(s) here, not \(count)")
        }
        let command = try device.commandRegister()
        defer { _ = try? device.writeConfig(UInt64(command), at: PCICommand.offset, width: .word) }
        var clear: UInt16 = 0
        // INTx needs the device's INTx not disabled; MSI and MSI-X writes need bus mastering.
        if index == PCIIRQ.intx { clear = PCICommand.intxDisable }
        try device.updateCommand(set: PCICommand.memorySpace | PCICommand.busMaster, clear: clear)

        // The BARs the recipe writes, looked up once: a raise is inside the timed span.
        var regions: [Int: RegionInfo] = [:]
        if case .device(let recipe) = source {
            for bar in Set((recipe.setup() + recipe.raise(vector: 0) + recipe.acknowledge(vector: 0) + recipe.teardown()).map(\.bar)) {
                regions[bar] = try device.regionInfo(PCIRegion.bar(bar))
            }
        }
        let writer = RegisterWriter(device: device, regions: regions)

        var eventFDs: [EventFD] = []
        for _ in 0..<count { eventFDs.append(try EventFD()) }
        try device.setIRQTriggers(index, eventFDs: eventFDs)
        defer { _ = try? device.disableIRQs(index) }
        if case .device(let recipe) = source {
            try writer.write(recipe.setup())
        }
        defer {
            if case .device(let recipe) = source {
                _ = try? writer.write(recipe.teardown())
                // Let the device's own timers run out before its vectors go (see the recipe).
                if recipe.settleMicroseconds > 0 { usleep(recipe.settleMicroseconds) }
            }
        }
        // Anything already pending (a device left mid-interrupt) is not ours.
        for eventFD in eventFDs { _ = try eventFD.take() }

        var results: [VectorResult] = []
        for vector in 0..<count {
            let clock = ContinuousClock()
            let start = clock.now
            try raise(vector, writer)
            let signals = try waitSignals(eventFDs[vector], milliseconds: timeoutMilliseconds)
            let elapsed = clock.now - start
            var strays: [Int] = []
            for (other, eventFD) in eventFDs.enumerated() where other != vector {
                if try eventFD.take() != nil { strays.append(other) }
            }
            try acknowledge(vector, writer)
            results.append(VectorResult(vector: vector, signals: signals,
                                        microseconds: signals > 0 ? Double(elapsed.components.attoseconds) / 1e12 + Double(elapsed.components.seconds) * 1e6 : nil,
                                        strayVectors: strays))
        }

        var masking: MaskingResult?
        if index == PCIIRQ.intx, case .device(let recipe) = source, let eventFD = eventFDs.first {
            // Automasking: the first interrupt arrives and leaves the line masked by the kernel.
            // The device is acknowledged but the line is not unmasked, and a second interrupt is
            // raised: it must not arrive while masked, then arrive exactly once on the unmask
            // (vfio-pci sees it pending and signals instead of unmasking).
            try raise(0, writer)
            _ = try waitSignals(eventFD, milliseconds: timeoutMilliseconds)
            try writer.write(recipe.acknowledge(vector: 0))
            try raise(0, writer)
            let whileMasked = try waitSignals(eventFD, milliseconds: quietMilliseconds)
            try device.unmaskINTx()
            let afterUnmask = try waitSignals(eventFD, milliseconds: timeoutMilliseconds)
            try acknowledge(0, writer)
            masking = MaskingResult(signalsWhileMasked: whileMasked, signalsAfterUnmask: afterUnmask)
        }
        return Report(index: index, vectorCount: info.count, vectors: results, masking: masking)
    }

    private func raise(_ vector: Int, _ writer: RegisterWriter) throws(VFIOError) {
        switch source {
        case .device(let recipe): try writer.write(recipe.raise(vector: vector))
        case .loopback: try device.triggerIRQs(index, start: UInt32(vector), count: 1)
        }
    }

    /// Clears the interrupt at the device and, for INTx, unmasks the line for the next one.
    private func acknowledge(_ vector: Int, _ writer: RegisterWriter) throws(VFIOError) {
        if case .device(let recipe) = source { try writer.write(recipe.acknowledge(vector: vector)) }
        if index == PCIIRQ.intx { try device.unmaskINTx() }
    }

    /// The eventfd's count once it is readable, or 0 if nothing arrives in time.
    private func waitSignals(_ eventFD: EventFD, milliseconds: Int32) throws(VFIOError) -> UInt64 {
        do {
            return try eventFD.wait(milliseconds: milliseconds)
        } catch .timedOut {
            return 0
        }
    }
}

/// Register writes through VFIO region writes, to BARs whose region info is already known.
private struct RegisterWriter {
    let device: VFIODevice
    let regions: [Int: RegionInfo]

    func write(_ writes: [RegisterWrite]) throws(VFIOError) {
        for register in writes {
            let region: RegionInfo
            if let known = regions[register.bar] { region = known } else { region = try device.regionInfo(PCIRegion.bar(register.bar)) }
            try device.write(register.value, to: region, offset: register.offset, width: register.width)
        }
    }
}
