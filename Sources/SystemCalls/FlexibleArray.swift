/// Why a header plus its trailing array cannot be laid out.
public enum FlexibleArrayError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The array's offset is not a multiple of its element's alignment, or lies inside the
    /// header's fields (offsetof never says so: the caller passed the wrong constant).
    case misplacedArray(offset: Int, headerSize: Int, alignment: Int)
    /// The size overflows, or passes `limit` (an `argsz` is a u32; a caller may ask for less).
    case tooLarge(count: Int, limit: Int)
    /// A negative element count.
    case negativeCount(Int)

    /// The problem in words.
    public var description: String {
        switch self {
        case .misplacedArray(let offset, let headerSize, let alignment):
            "a trailing array at offset \(offset) does not fit a \(headerSize)-byte header with \(alignment)-byte elements"
        case .tooLarge(let count, let limit): "\(count) trailing elements make a buffer larger than \(limit) bytes"
        case .negativeCount(let count): "a trailing array cannot hold \(count) elements"
        }
    }
}

/// The layout of a C struct that ends in a flexible array member
/// (`struct vfio_irq_set { __u32 argsz; ...; __u8 data[]; }`): the header's size as Swift
/// imports it, the array's offset as the C compiler places it (`offsetof`, exported by
/// CLinuxUAPI, never a literal or Swift's size of the head, which can differ by padding), and the
/// whole size, every step overflow-checked. The model is rust-vmm's `FamStructWrapper`
/// (vmm-sys-util's fam.rs, used by vfio-ioctls).
public struct FlexibleArrayLayout: Equatable, Sendable {
    /// Bytes of the header's fixed fields (MemoryLayout<Header>.size).
    public let headerSize: Int
    /// Where element 0 starts (offsetof the array member).
    public let arrayOffset: Int
    /// Bytes from one element to the next (MemoryLayout<Element>.stride).
    public let elementStride: Int
    /// How many elements follow the header.
    public let count: Int
    /// The whole buffer: the header, and the array after it (at least the header's size).
    public let byteCount: Int

    /// Lays out `count` elements of `elementStride` bytes (aligned to `elementAlignment`) at
    /// `arrayOffset` after a `headerSize`-byte header; the total may be at most `limit` bytes.
    public init(headerSize: Int, arrayOffset: Int, elementStride: Int, elementAlignment: Int, count: Int,
                limit: Int = Int(UInt32.max)) throws(FlexibleArrayError) {
        guard count >= 0 else { throw .negativeCount(count) }
        // Swift's size of the header ends at its last field (C's sizeof may add padding after
        // it), and C puts the array at or after that, aligned for its elements.
        guard elementAlignment > 0, elementStride > 0, arrayOffset >= headerSize, arrayOffset % elementAlignment == 0 else {
            throw .misplacedArray(offset: arrayOffset, headerSize: headerSize, alignment: elementAlignment)
        }
        let (payload, payloadOverflow) = count.multipliedReportingOverflow(by: elementStride)
        let (end, endOverflow) = arrayOffset.addingReportingOverflow(payload)
        guard !payloadOverflow, !endOverflow, max(end, headerSize) <= limit else { throw .tooLarge(count: count, limit: limit) }
        self.headerSize = headerSize
        self.arrayOffset = arrayOffset
        self.elementStride = elementStride
        self.count = count
        self.byteCount = max(end, headerSize)
    }

    /// The layout of `count` `Element`s after a `Header`, the array at `arrayOffset`.
    public init<Header, Element>(_: Header.Type, _: Element.Type, arrayOffset: Int, count: Int,
                                 limit: Int = Int(UInt32.max)) throws(FlexibleArrayError) {
        try self.init(headerSize: MemoryLayout<Header>.size, arrayOffset: arrayOffset, elementStride: MemoryLayout<Element>.stride,
                      elementAlignment: MemoryLayout<Element>.alignment, count: count, limit: limit)
    }

    /// Where element `index` starts.
    public func offset(ofElement index: Int) -> Int { arrayOffset + index * elementStride }
}

/// A header and its trailing array in one zeroed byte buffer, laid out by `FlexibleArrayLayout`,
/// ready for an ioctl (`SystemCall.ioctl(_:_:bytes:orThrow:)`). The header's `argsz` (and its
/// element count, where the struct has one) are set from the layout, so no caller computes them.
/// Loads and stores are unaligned-safe: the kernel copies the buffer, and Swift reads it back
/// field by field.
public struct FlexibleArrayBuffer<Header, Element> {
    /// The buffer as the kernel reads (and may fill) it.
    public var bytes: [UInt8]
    /// Its layout.
    public let layout: FlexibleArrayLayout

    /// `header` followed by `elements` at `arrayOffset`; `argsz` and `countField`, when given,
    /// are set in the header to the buffer's size and the number of elements.
    public init(header: Header, elements: [Element], arrayOffset: Int, argsz: WritableKeyPath<Header, UInt32>? = nil,
                countField: WritableKeyPath<Header, UInt32>? = nil, limit: Int = Int(UInt32.max)) throws(FlexibleArrayError) {
        try self.init(header: header, capacity: elements.count, arrayOffset: arrayOffset, argsz: argsz, countField: countField, limit: limit)
        for (index, element) in elements.enumerated() { self[index] = element }
    }

    /// `header` followed by room for `capacity` zeroed elements (an answer the kernel fills in).
    public init(header: Header, capacity: Int, arrayOffset: Int, argsz: WritableKeyPath<Header, UInt32>? = nil,
                countField: WritableKeyPath<Header, UInt32>? = nil, limit: Int = Int(UInt32.max)) throws(FlexibleArrayError) {
        let layout = try FlexibleArrayLayout(Header.self, Element.self, arrayOffset: arrayOffset, count: capacity, limit: min(limit, Int(UInt32.max)))
        self.layout = layout
        bytes = [UInt8](repeating: 0, count: layout.byteCount)
        var head = header
        // Both fit a u32: the layout's limit is at most UInt32.max.
        if let argsz { head[keyPath: argsz] = UInt32(layout.byteCount) }
        if let countField { head[keyPath: countField] = UInt32(capacity) }
        self.header = head
    }

    /// The header, read from (or written into) the buffer's first bytes.
    public var header: Header {
        get {
            // Safety: the buffer holds at least MemoryLayout<Header>.size bytes (byteCount >= headerSize).
            bytes.withUnsafeBytes { $0.loadUnaligned(as: Header.self) }
        }
        set { store(newValue, at: 0) }
    }

    /// Element `index` of the array (0 ..< layout.count); a trap outside it, as for an Array.
    public subscript(index: Int) -> Element {
        get {
            precondition(index >= 0 && index < layout.count, "element \(index) of \(layout.count)")
            // Safety: element `index` lies inside the buffer (byteCount covers every element).
            return bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: layout.offset(ofElement: index), as: Element.self) }
        }
        set {
            precondition(index >= 0 && index < layout.count, "element \(index) of \(layout.count)")
            store(newValue, at: layout.offset(ofElement: index))
        }
    }

    /// Copies `value`'s MemoryLayout<T>.size bytes to `offset` (which the layout keeps inside).
    private mutating func store<T>(_ value: T, at offset: Int) {
        withUnsafeBytes(of: value) { source in
            // Safety: offset + the value's size is within byteCount (the header at 0, elements
            // inside the array); the loop copies byte by byte, so alignment does not matter.
            bytes.withUnsafeMutableBytes { target in
                for (position, byte) in source.prefix(MemoryLayout<T>.size).enumerated() { target[offset + position] = byte }
            }
        }
    }
}
