import Testing
@testable import VFIO

@Suite("VFIO_DEVICE_SET_IRQS argument")
struct IRQSetLayoutTests {
    private func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * $1) }
    }

    /// The kernel's struct vfio_irq_set: argsz, flags, index, start, count (u32 each, 20 bytes),
    /// then data[]: with eventfds one s32 each, argsz counting them.
    @Test func eventFDPayloadFollowsTheHead() throws {
        let bytes = try irqSetBytes(index: 2, flags: 0x24, start: 1, count: 3, eventFDs: [7, 8, -1])
        #expect(bytes.count == 20 + 3 * 4)
        #expect(u32(bytes, 0) == 32)
        #expect(u32(bytes, 4) == 0x24)
        #expect(u32(bytes, 8) == 2)
        #expect(u32(bytes, 12) == 1)
        #expect(u32(bytes, 16) == 3)
        #expect(u32(bytes, 20) == 7)
        #expect(u32(bytes, 24) == 8)
        #expect(u32(bytes, 28) == UInt32.max)
    }

    /// DATA_NONE carries no payload: argsz is the head alone, even with a count.
    @Test func noPayloadIsTheHeadAlone() throws {
        let bytes = try irqSetBytes(index: 0, flags: 0x21, start: 0, count: 4, eventFDs: [])
        #expect(bytes.count == 20)
        #expect(u32(bytes, 0) == 20)
        #expect(u32(bytes, 16) == 4)
    }
}

@Suite("Typed DMA errors")
struct DMAErrorTests {
    /// More mappings than dma_avail: the figures come back to match on.
    @Test func dmaAvailExhausted() {
        #expect(throws: VFIOError.dmaAvailExhausted(requested: 8, available: 4)) {
            try DMABudget.check(ramBytes: 65536, mappings: 8, dmaAvailable: 4, memlock: nil, pinnedBytes: 0)
        }
        // Exactly what is left is allowed; an unreported dma_avail checks nothing.
        #expect(throws: Never.self) {
            try DMABudget.check(ramBytes: 0, mappings: 4, dmaAvailable: 4, memlock: nil, pinnedBytes: 0)
            try DMABudget.check(ramBytes: 0, mappings: 1 << 20, dmaAvailable: nil, memlock: nil, pinnedBytes: 0)
        }
    }

    /// RLIMIT_MEMLOCK without CAP_IPC_LOCK: requested, already locked (the larger of VmLck and
    /// this container's pins) and the limit.
    @Test func memlockExceeded() {
        let limit = MemlockLimit(current: 1 << 20, maximum: 1 << 20, exempt: false, lockedBytes: 4096)
        #expect(throws: VFIOError.memlockExceeded(requested: 1 << 20, locked: 8192, limit: 1 << 20)) {
            try DMABudget.check(ramBytes: 1 << 20, mappings: 1, dmaAvailable: 100, memlock: limit, pinnedBytes: 8192)
        }
        // The same pin is allowed with CAP_IPC_LOCK, and device memory is never counted.
        let exempt = MemlockLimit(current: 1 << 20, maximum: 1 << 20, exempt: true, lockedBytes: 4096)
        #expect(throws: Never.self) {
            try DMABudget.check(ramBytes: 1 << 20, mappings: 1, dmaAvailable: 100, memlock: exempt, pinnedBytes: 8192)
            try DMABudget.check(ramBytes: 0, mappings: 1, dmaAvailable: 100, memlock: limit, pinnedBytes: 8192)
        }
    }

    /// The texts the CLI prints (and the lab's bar-dma-errors scenario matches) stay as they were.
    @Test func descriptionsKeepTheirWording() {
        #expect(VFIOError.memlockExceeded(requested: 2097152, locked: 0, limit: 1048576).description
            .contains("exceeds RLIMIT_MEMLOCK of 1048576 bytes and the process lacks CAP_IPC_LOCK"))
        #expect(VFIOError.dmaAvailExhausted(requested: 8, available: 4).description.contains("only 4 left (dma_avail"))
        #expect(VFIOError.notMapped(iova: 0x1000).description == "IOVA 0x1000 is not mapped by this container")
        #expect(VFIOError.iovaSpace(.exhausted(size: 0x1000, alignment: 0x1000, limit: .max)).description
            == "no free IOVA range for 0x1000 bytes aligned to 0x1000")
        #expect(VFIOError.invalidDMABufferSize(bytes: 100, page: 4096).description
            == "DMA buffer size 100 is not a positive multiple of 4096")
    }

    /// A buffer size that is no page multiple is refused before anything is mapped.
    @Test func badBufferSize() {
        #expect(throws: VFIOError.invalidDMABufferSize(bytes: 100, page: 4096)) { try DMABuffer(size: 100) }
        #expect(throws: VFIOError.invalidDMABufferSize(bytes: 0, page: 4096)) { try DMABuffer(size: 0) }
    }

    /// The bus address of a plain mapping whose BAR resource could not be read says why.
    @Test func unknownBusAddressKeepsItsCause() {
        let cause = VFIOError.unreadableSysfs(path: "/sys/bus/pci/devices/0000:00:05.0/resource")
        let error = VFIOError.physicalAddressUnknown(region: 2, cause: cause)
        #expect(error.description.hasSuffix(": " + cause.description))
        guard case .physicalAddressUnknown(_, .unreadableSysfs?) = error else {
            Issue.record("the cause is not kept: \(error)")
            return
        }
    }
}
