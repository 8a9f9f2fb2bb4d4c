import CLinuxUAPI
import SystemCalls
import Testing

/// The one way to build a header plus its trailing array (issue 25 §4): sizes from the C
/// struct's own layout, overflow refused, every element where C puts it.
@Suite struct FlexibleArrayTests {
    /// vfio_irq_set's data[] starts where C puts it (offsetof), after the five u32 fields.
    @Test func sizesFollowTheCStruct() throws {
        let offset = Int(CVFIO_IRQ_SET_DATA_OFFSET)
        #expect(offset == 20 && MemoryLayout<vfio_irq_set>.size == 20)
        let none = try FlexibleArrayLayout(vfio_irq_set.self, Int32.self, arrayOffset: offset, count: 0)
        #expect(none.byteCount == 20)
        let three = try FlexibleArrayLayout(vfio_irq_set.self, Int32.self, arrayOffset: offset, count: 3)
        #expect(three.byteCount == 32 && three.offset(ofElement: 2) == 28)
        // kvm_irq_routing: two u32, then 8-byte-aligned entries of 48 bytes (four u32 and a 32-byte union).
        let routes = try FlexibleArrayLayout(kvm_irq_routing.self, kvm_irq_routing_entry.self,
                                             arrayOffset: Int(CKVM_IRQ_ROUTING_ENTRIES_OFFSET), count: 2)
        #expect(routes.arrayOffset == 8 && routes.elementStride == 48 && routes.byteCount == 104)
    }

    @Test func argszAndCountAreSetFromTheLayout() throws {
        var head = vfio_irq_set()
        head.index = 4
        let buffer = try FlexibleArrayBuffer(header: head, elements: [Int32(7), -1, 9], arrayOffset: Int(CVFIO_IRQ_SET_DATA_OFFSET),
                                             argsz: \.argsz, countField: \.count)
        #expect(buffer.bytes.count == 32)
        #expect(buffer.header.argsz == 32 && buffer.header.count == 3 && buffer.header.index == 4)
        #expect(buffer[0] == 7 && buffer[1] == -1 && buffer[2] == 9)
        // Little-endian bytes of element 1 (-1) at offset 24.
        #expect(Array(buffer.bytes[24..<28]) == [0xff, 0xff, 0xff, 0xff])
        let empty = try FlexibleArrayBuffer<vfio_irq_set, Int32>(header: vfio_irq_set(), capacity: 0, arrayOffset: 20, argsz: \.argsz)
        #expect(empty.bytes.count == 20 && empty.header.argsz == 20)
    }

    @Test func overflowAndLimitsAreRefused() {
        #expect(throws: FlexibleArrayError.tooLarge(count: Int.max / 2, limit: Int(UInt32.max))) {
            try FlexibleArrayLayout(headerSize: 20, arrayOffset: 20, elementStride: 4, elementAlignment: 4, count: Int.max / 2)
        }
        // 2^30 four-byte elements pass UInt32.max, the most an argsz can say.
        #expect(throws: FlexibleArrayError.tooLarge(count: 1 << 30, limit: Int(UInt32.max))) {
            try FlexibleArrayLayout(headerSize: 20, arrayOffset: 20, elementStride: 4, elementAlignment: 4, count: 1 << 30)
        }
        #expect(throws: FlexibleArrayError.tooLarge(count: 2, limit: 24)) {
            try FlexibleArrayLayout(headerSize: 20, arrayOffset: 20, elementStride: 4, elementAlignment: 4, count: 2, limit: 24)
        }
        #expect(throws: FlexibleArrayError.negativeCount(-1)) {
            try FlexibleArrayLayout(headerSize: 20, arrayOffset: 20, elementStride: 4, elementAlignment: 4, count: -1)
        }
    }

    @Test func anArrayOffsetCOuldNotGiveIsRefused() {
        // Inside the header's fields, or not aligned for the elements.
        #expect(throws: FlexibleArrayError.misplacedArray(offset: 16, headerSize: 20, alignment: 4)) {
            try FlexibleArrayLayout(headerSize: 20, arrayOffset: 16, elementStride: 4, elementAlignment: 4, count: 1)
        }
        #expect(throws: FlexibleArrayError.misplacedArray(offset: 12, headerSize: 8, alignment: 8)) {
            try FlexibleArrayLayout(headerSize: 8, arrayOffset: 12, elementStride: 32, elementAlignment: 8, count: 1)
        }
        // Alignment padding after the header is C's to add: offset 24 for a 20-byte header is fine.
        #expect((try? FlexibleArrayLayout(headerSize: 20, arrayOffset: 24, elementStride: 8, elementAlignment: 8, count: 1))?.byteCount == 32)
    }
}
