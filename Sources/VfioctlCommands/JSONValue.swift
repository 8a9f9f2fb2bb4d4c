#if canImport(Glibc)
import Glibc
#endif

/// A JSON document built in memory and rendered directly to bytes, byte-for-byte the same as
/// Foundation's JSONEncoder with [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] (a test
/// holds them equal). `list` and `groups` print thousands of objects on large hosts, where
/// JSONEncoder's cost was a third of the command's run time.
enum JSONValue: Encodable, Equatable {
    case string(String)
    case unsigned(UInt64)
    case integer(Int)
    case bool(Bool)
    /// A number already in its JSON text (floating point, as JSONTreeEncoder writes it).
    case number(String)
    case null
    case array([JSONValue])
    case object([(String, JSONValue)])

    static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        lhs.rendered() == rhs.rendered()
    }

    static func optional(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }
    static func optional(_ value: Int?) -> JSONValue { value.map(JSONValue.integer) ?? .null }
    static func optional(_ value: Bool?) -> JSONValue { value.map(JSONValue.bool) ?? .null }

    func rendered() -> String {
        String(decoding: renderedBytes(), as: UTF8.self)
    }

    func renderedBytes() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4096)
        render(into: &bytes, indent: 0, orders: KeyOrders())
        return bytes
    }

    /// Writes the document and a newline to standard output in one go, without a String copy.
    func printToStandardOutput() {
        var bytes = renderedBytes()
        bytes.append(0x0a)
        writeToStandardOutput(bytes)
    }

    private func render(into out: inout [UInt8], indent: Int, orders: KeyOrders) {
        switch self {
        case .string(let text): Self.appendString(text, to: &out)
        case .unsigned(let value): out.append(contentsOf: String(value).utf8)
        case .integer(let value): out.append(contentsOf: String(value).utf8)
        case .bool(let value): out.append(contentsOf: (value ? "true" : "false").utf8)
        case .number(let text): out.append(contentsOf: text.utf8)
        case .null: out.append(contentsOf: "null".utf8)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            out.append(0x0a)
            if items.isEmpty { out.append(0x0a) }
            for (position, item) in items.enumerated() {
                Self.appendIndent(indent + 1, to: &out)
                item.render(into: &out, indent: indent + 1, orders: orders)
                if position < items.count - 1 { out.append(UInt8(ascii: ",")) }
                out.append(0x0a)
            }
            Self.appendIndent(indent, to: &out)
            out.append(UInt8(ascii: "]"))
        case .object(let pairs):
            out.append(UInt8(ascii: "{"))
            out.append(0x0a)
            if pairs.isEmpty { out.append(0x0a) }
            // Objects of one kind (every device of `list`) share a key sequence: its sorted order
            // is worked out once per document, not once per object (sorting was a third of
            // `list --json`'s render time).
            let order = orders.order(of: pairs)
            for (position, index) in order.enumerated() {
                let pair = pairs[index]
                Self.appendIndent(indent + 1, to: &out)
                Self.appendString(pair.0, to: &out)
                out.append(contentsOf: " : ".utf8)
                pair.1.render(into: &out, indent: indent + 1, orders: orders)
                if position < order.count - 1 { out.append(UInt8(ascii: ",")) }
                out.append(0x0a)
            }
            Self.appendIndent(indent, to: &out)
            out.append(UInt8(ascii: "}"))
        }
    }

    private static func appendIndent(_ level: Int, to out: inout [UInt8]) {
        out.append(contentsOf: repeatElement(UInt8(ascii: " "), count: level * 2))
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// The sorted order of the key sequences met in one document, remembered (a few at most).
    final class KeyOrders {
        private var known: [(keys: [String], order: [Int])] = []

        /// The indices of `pairs` in key order. Keys are ASCII snake_case, for which String's
        /// ordering is the byte ordering that .sortedKeys uses; comparing a key with the same
        /// literal is a pointer check.
        func order(of pairs: [(String, JSONValue)]) -> [Int] {
            search: for entry in known where entry.keys.count == pairs.count {
                for index in pairs.indices where entry.keys[index] != pairs[index].0 { continue search }
                return entry.order
            }
            let order = pairs.indices.sorted { pairs[$0].0 < pairs[$1].0 }
            if known.count < 16 { known.append((pairs.map(\.0), order)) }
            return order
        }
    }

    /// Whether `byte` is written escaped (a quote, a backslash, a control character).
    @inline(__always) private static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")
    }

    private static func appendString(_ text: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        // Nearly every string (addresses, IDs, names) has nothing to escape: copied whole.
        let copied: Bool? = text.utf8.withContiguousStorageIfAvailable { bytes in
            guard !bytes.contains(where: needsEscape) else { return false }
            out.append(contentsOf: bytes)
            return true
        }
        if copied == true {
            out.append(UInt8(ascii: "\""))
            return
        }
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: "\\\"".utf8)
            case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
            case 0x0a: out.append(contentsOf: "\\n".utf8)
            case 0x0d: out.append(contentsOf: "\\r".utf8)
            case 0x09: out.append(contentsOf: "\\t".utf8)
            case 0x08: out.append(contentsOf: "\\b".utf8)
            case 0x0c: out.append(contentsOf: "\\f".utf8)
            case 0..<0x20:
                out.append(contentsOf: "\\u00".utf8)
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0xf)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Lets Foundation encode the same document, for the equality test.
    func encode(to encoder: Encoder) throws {
        switch self {
        case .string(let text): var container = encoder.singleValueContainer(); try container.encode(text)
        case .unsigned(let value): var container = encoder.singleValueContainer(); try container.encode(value)
        case .integer(let value): var container = encoder.singleValueContainer(); try container.encode(value)
        case .bool(let value): var container = encoder.singleValueContainer(); try container.encode(value)
        case .number(let text): var container = encoder.singleValueContainer(); try container.encode(Double(text) ?? .nan)
        case .null: var container = encoder.singleValueContainer(); try container.encodeNil()
        case .array(let items):
            var container = encoder.unkeyedContainer()
            for item in items { try container.encode(item) }
        case .object(let pairs):
            var container = encoder.container(keyedBy: AnyKey.self)
            for (key, value) in pairs { try container.encode(value, forKey: AnyKey(stringValue: key)) }
        }
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

/// Writes all of `bytes` to file descriptor 1, retrying short writes.
func writeToStandardOutput(_ bytes: [UInt8]) {
    bytes.withUnsafeBytes { raw in
        guard var base = raw.baseAddress else { return }
        var remaining = raw.count
        while remaining > 0 {
            let written = write(1, base, remaining)
            if written < 0 {
                if errno == EINTR { continue }
                return
            }
            remaining -= written
            base += written
        }
    }
}
