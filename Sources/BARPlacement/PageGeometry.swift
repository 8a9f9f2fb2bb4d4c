import HostKernel
import PageAlignment
import TextFormat

/// The page sizes a mapping can use, as page orders: order k maps 2^k base pages in one entry.
/// On x86-64: 0 (4 KiB PTE), 9 (2 MiB PMD), 18 (1 GiB PUD), the orders vfio-pci's huge_fault
/// handler is called with.
public struct PageGeometry: Sendable, Equatable, Hashable {
    /// The base page (order 0): the host's, from `BasePage`.
    public static let pageShift = BasePage.shift
    /// The base page's size in bytes (`BasePage.size`).
    public static let pageSize: UInt64 = BasePage.size
    /// PTE, PMD and PUD on x86-64 with 4 KiB base pages.
    public static let x86_64 = PageGeometry(validatedOrders: [0, 9, 18])

    /// Only the base page: what the fault path tries where the host refuses huge faults.
    public static let basePagesOnly = PageGeometry(validatedOrders: [0])

    /// The orders the kernel's fault path tries for a mapping that meets `gate` on x86-64.
    public static func tried(under gate: HugeFaultGate) -> PageGeometry {
        gate.allowsHugeFaults ? .x86_64 : .basePagesOnly
    }

    /// Supported orders, ascending; always contains 0.
    public let orders: [Int]

    /// Orders above 0, largest first: the order in which the kernel tries them on a fault.
    public var hugeOrdersDescending: [Int] { orders.reversed().filter { $0 > 0 } }
    /// The largest supported order (0 with base pages only).
    public var largestOrder: Int { orders.last ?? 0 }

    /// The page-table levels that can hold a leaf above the PTE (PUD, PMD), largest first. They
    /// exist whether or not a huge order is supported: an unsupported order is never tried, but
    /// its table is still walked and allocated.
    public static let tableLevelOrders = [18, 9]

    /// A geometry with these orders (duplicates and their order do not matter); throws
    /// `.invalidOrders` unless 0 is among them and every other one is 9 or 18.
    public init(orders: [Int]) throws(PlacementError) {
        let sorted = Array(Set(orders)).sorted()
        guard sorted.first == 0 else { throw .invalidOrders(orders, reason: "order 0 (the base page) must be supported") }
        guard sorted.allSatisfy({ $0 == 0 || Self.tableLevelOrders.contains($0) }) else {
            throw .invalidOrders(orders, reason: "only 0 (PTE), 9 (PMD) and 18 (PUD) are page-table levels on x86-64")
        }
        self.orders = sorted
    }

    /// Whether `order` is one of `orders`.
    public func supports(order: Int) -> Bool { orders.contains(order) }

    private init(validatedOrders: [Int]) { self.orders = validatedOrders }

    /// Bytes mapped by one entry of `order`.
    public static func bytes(order: Int) -> UInt64 { pageSize << UInt64(order) }
}

/// Why a plan could not be made. Each message names the bad value.
public enum PlacementError: Error, Equatable, CustomStringConvertible {
    case invalidOrders([Int], reason: String)
    case notPageAligned(what: String, value: UInt64)
    case emptyArea
    case addressOverflow(what: String)
    case pageOutOfRange(page: UInt64, pages: UInt64)
    case tooLarge(what: String, limit: String)

    /// Names the bad value and what is wrong with it, for the CLI's error message.
    public var description: String {
        switch self {
        case let .invalidOrders(orders, reason):
            return "page orders \(orders) are not usable: \(reason)"
        case let .notPageAligned(what, value):
            return "\(what) \(value.hex()) is not a multiple of the \(pageSizeName(PageGeometry.pageSize)) page"
        case .emptyArea:
            return "the area to map is empty"
        case let .addressOverflow(what):
            return "\(what) does not fit in the 64-bit address space"
        case let .pageOutOfRange(page, pages):
            return "page \(page) is outside the mapping of \(pages) pages"
        case let .tooLarge(what, limit):
            return "\(what) is too large to plan (the limit is \(limit))"
        }
    }
}

/// A mapping placed in virtual memory: where it starts, how long it is, and the physical
/// (bus) address its first byte reaches. What the kernel's fault handler decides with.
public struct MappingGeometry: Sendable, Equatable, Hashable {
    /// The mapping's first virtual address, page aligned.
    public let virtualStart: UInt64
    /// Bytes mapped: a nonzero multiple of the page size.
    public let length: UInt64
    /// The bus address behind `virtualStart`, page aligned.
    public let physicalStart: UInt64

    /// Throws `.emptyArea` for length 0, `.notPageAligned` naming the first unaligned value, and
    /// `.addressOverflow` when either range would pass 2^64.
    public init(virtualStart: UInt64, length: UInt64, physicalStart: UInt64) throws(PlacementError) {
        guard length > 0 else { throw .emptyArea }
        for (what, value) in [("virtual start", virtualStart), ("length", length), ("physical start", physicalStart)]
        where value % PageGeometry.pageSize != 0 {
            throw .notPageAligned(what: what, value: value)
        }
        guard virtualStart <= UInt64.max - length else { throw .addressOverflow(what: "the virtual range") }
        guard physicalStart <= UInt64.max - length else { throw .addressOverflow(what: "the physical range") }
        self.virtualStart = virtualStart
        self.length = length
        self.physicalStart = physicalStart
    }

    /// The first virtual address after the mapping (`init` checked that it fits).
    public var virtualEnd: UInt64 { virtualStart + length }
    /// Base pages in the mapping.
    public var pageCount: UInt64 { length >> UInt64(PageGeometry.pageShift) }

    /// The physical address behind a virtual address inside the mapping.
    public func physical(at virtualAddress: UInt64) -> UInt64 { physicalStart + (virtualAddress - virtualStart) }
}
