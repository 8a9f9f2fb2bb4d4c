/// The one way vfioctl's executables turn a report into JSON: any `Encodable` is encoded into a
/// `JSONValue` tree, which renders itself (sorted keys, the layout JSONValue documents). The
/// encoder writes an absent optional as null, never leaving its key out, whatever module the
/// report type is declared in: synthesized conformances call `encodeIfPresent`, which the keyed
/// container below answers with null.
enum JSONTreeEncoder {
    /// `value` as a JSON tree.
    static func tree<T: Encodable>(_ value: T) throws -> JSONValue {
        if let ready = value as? JSONValue { return ready }
        let root = JSONNode()
        try value.encode(to: TreeEncoder(node: root, codingPath: []))
        return root.value
    }
}

/// A node of the tree under construction: containers are filled in place, then frozen into a
/// JSONValue.
private final class JSONNode {
    enum Content {
        case single(JSONValue)
        case object(keys: [String], values: [String: JSONNode])
        case array([JSONNode])
    }
    var content: Content = .single(.null)

    var value: JSONValue {
        switch content {
        case .single(let value): return value
        case .object(let keys, let values): return .object(keys.compactMap { key in values[key].map { (key, $0.value) } })
        case .array(let items): return .array(items.map(\.value))
        }
    }

    /// Makes the node an object (keeping one it already is: a type may ask for its container twice).
    func becomeObject() {
        if case .object = content { return }
        content = .object(keys: [], values: [:])
    }

    func becomeArray() {
        if case .array = content { return }
        content = .array([])
    }

    /// The child under `key`, new or replacing what the key held.
    func child(_ key: String) -> JSONNode {
        let node = JSONNode()
        guard case .object(var keys, var values) = content else { return node }
        content = .single(.null)  // drop the reference before mutating the copy
        if values[key] == nil { keys.append(key) }
        values[key] = node
        content = .object(keys: keys, values: values)
        return node
    }

    func appended() -> JSONNode {
        let node = JSONNode()
        guard case .array(var items) = content else { return node }
        content = .single(.null)
        items.append(node)
        content = .array(items)
        return node
    }

    var count: Int {
        if case .array(let items) = content { return items.count }
        return 0
    }
}

/// A coding key for indexes and super-encoders.
private struct IndexKey: CodingKey {
    let stringValue: String
    let intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue; intValue = nil }
    init(intValue: Int) { stringValue = String(intValue); self.intValue = intValue }
}

/// JSON numbers as JSONEncoder writes them: integers as they are, floating point in Swift's
/// shortest round-trip form without a trailing ".0"; NaN and infinities are refused.
private func number<F: BinaryFloatingPoint & CustomStringConvertible>(_ value: F, _ path: [CodingKey]) throws -> JSONValue {
    guard value.isFinite else {
        throw EncodingError.invalidValue(value, EncodingError.Context(codingPath: path, debugDescription: "\(value) is not a JSON number"))
    }
    var text = value.description
    if text.hasSuffix(".0") { text.removeLast(2) }
    return .number(text)
}

private struct TreeEncoder: Encoder {
    let node: JSONNode
    let codingPath: [CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        node.becomeObject()
        return KeyedEncodingContainer(KeyedTree<Key>(node: node, codingPath: codingPath))
    }

    func unkeyedContainer() -> UnkeyedEncodingContainer {
        node.becomeArray()
        return UnkeyedTree(node: node, codingPath: codingPath)
    }

    func singleValueContainer() -> SingleValueEncodingContainer {
        SingleTree(node: node, codingPath: codingPath)
    }
}

/// Encodes one value into `node`: primitives directly, anything else through its own encode(to:).
private func encodeValue<T: Encodable>(_ value: T, into node: JSONNode, path: [CodingKey]) throws {
    switch value {
    case let ready as JSONValue: node.content = .single(ready)
    case let text as String: node.content = .single(.string(text))
    case let flag as Bool: node.content = .single(.bool(flag))
    case let number as Int: node.content = .single(.integer(number))
    case let number as UInt64: node.content = .single(.unsigned(number))
    case let number as Double: node.content = .single(try VfioctlCommands.number(number, path))
    default: try value.encode(to: TreeEncoder(node: node, codingPath: path))
    }
}

private struct KeyedTree<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let node: JSONNode
    let codingPath: [CodingKey]

    private func set(_ value: JSONValue, _ key: Key) { node.child(key.stringValue).content = .single(value) }

    mutating func encodeNil(forKey key: Key) throws { set(.null, key) }
    mutating func encode(_ value: Bool, forKey key: Key) throws { set(.bool(value), key) }
    mutating func encode(_ value: String, forKey key: Key) throws { set(.string(value), key) }
    mutating func encode(_ value: Double, forKey key: Key) throws { set(try number(value, codingPath + [key]), key) }
    mutating func encode(_ value: Float, forKey key: Key) throws { set(try number(value, codingPath + [key]), key) }
    mutating func encode(_ value: Int, forKey key: Key) throws { set(.integer(value), key) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { set(.integer(Int(value)), key) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { set(.integer(Int(value)), key) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { set(.integer(Int(value)), key) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { set(.integer(Int(value)), key) }
    mutating func encode(_ value: UInt, forKey key: Key) throws { set(.unsigned(UInt64(value)), key) }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { set(.unsigned(UInt64(value)), key) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { set(.unsigned(UInt64(value)), key) }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { set(.unsigned(UInt64(value)), key) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { set(.unsigned(value), key) }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try encodeValue(value, into: node.child(key.stringValue), path: codingPath + [key])
    }

    // Absent is null, never a missing key: the rule every report keeps.
    mutating func encodeIfPresent(_ value: Bool?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: String?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Double?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Float?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int8?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int16?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int32?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: Int64?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt8?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt16?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt32?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent(_ value: UInt64?, forKey key: Key) throws { try encodeOrNull(value, key) }
    mutating func encodeIfPresent<T: Encodable>(_ value: T?, forKey key: Key) throws { try encodeOrNull(value, key) }

    private mutating func encodeOrNull<T: Encodable>(_ value: T?, _ key: Key) throws {
        guard let value else { return set(.null, key) }
        try encode(value, forKey: key)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        let child = node.child(key.stringValue)
        child.becomeObject()
        return KeyedEncodingContainer(KeyedTree<NestedKey>(node: child, codingPath: codingPath + [key]))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> UnkeyedEncodingContainer {
        let child = node.child(key.stringValue)
        child.becomeArray()
        return UnkeyedTree(node: child, codingPath: codingPath + [key])
    }

    mutating func superEncoder() -> Encoder {
        TreeEncoder(node: node.child("super"), codingPath: codingPath + [IndexKey(stringValue: "super")])
    }

    mutating func superEncoder(forKey key: Key) -> Encoder {
        TreeEncoder(node: node.child(key.stringValue), codingPath: codingPath + [key])
    }
}

private struct UnkeyedTree: UnkeyedEncodingContainer {
    let node: JSONNode
    let codingPath: [CodingKey]
    var count: Int { node.count }

    private func append(_ value: JSONValue) { node.appended().content = .single(value) }

    mutating func encodeNil() throws { append(.null) }
    mutating func encode(_ value: Bool) throws { append(.bool(value)) }
    mutating func encode(_ value: String) throws { append(.string(value)) }
    mutating func encode(_ value: Double) throws { append(try number(value, codingPath)) }
    mutating func encode(_ value: Float) throws { append(try number(value, codingPath)) }
    mutating func encode(_ value: Int) throws { append(.integer(value)) }
    mutating func encode(_ value: Int8) throws { append(.integer(Int(value))) }
    mutating func encode(_ value: Int16) throws { append(.integer(Int(value))) }
    mutating func encode(_ value: Int32) throws { append(.integer(Int(value))) }
    mutating func encode(_ value: Int64) throws { append(.integer(Int(value))) }
    mutating func encode(_ value: UInt) throws { append(.unsigned(UInt64(value))) }
    mutating func encode(_ value: UInt8) throws { append(.unsigned(UInt64(value))) }
    mutating func encode(_ value: UInt16) throws { append(.unsigned(UInt64(value))) }
    mutating func encode(_ value: UInt32) throws { append(.unsigned(UInt64(value))) }
    mutating func encode(_ value: UInt64) throws { append(.unsigned(value)) }
    mutating func encode<T: Encodable>(_ value: T) throws {
        let path = codingPath + [IndexKey(intValue: count)]
        try encodeValue(value, into: node.appended(), path: path)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let path = codingPath + [IndexKey(intValue: count)]
        let child = node.appended()
        child.becomeObject()
        return KeyedEncodingContainer(KeyedTree<NestedKey>(node: child, codingPath: path))
    }

    mutating func nestedUnkeyedContainer() -> UnkeyedEncodingContainer {
        let path = codingPath + [IndexKey(intValue: count)]
        let child = node.appended()
        child.becomeArray()
        return UnkeyedTree(node: child, codingPath: path)
    }

    mutating func superEncoder() -> Encoder {
        let path = codingPath + [IndexKey(intValue: count)]
        return TreeEncoder(node: node.appended(), codingPath: path)
    }
}

private struct SingleTree: SingleValueEncodingContainer {
    let node: JSONNode
    let codingPath: [CodingKey]

    private func set(_ value: JSONValue) { node.content = .single(value) }

    mutating func encodeNil() throws { set(.null) }
    mutating func encode(_ value: Bool) throws { set(.bool(value)) }
    mutating func encode(_ value: String) throws { set(.string(value)) }
    mutating func encode(_ value: Double) throws { set(try number(value, codingPath)) }
    mutating func encode(_ value: Float) throws { set(try number(value, codingPath)) }
    mutating func encode(_ value: Int) throws { set(.integer(value)) }
    mutating func encode(_ value: Int8) throws { set(.integer(Int(value))) }
    mutating func encode(_ value: Int16) throws { set(.integer(Int(value))) }
    mutating func encode(_ value: Int32) throws { set(.integer(Int(value))) }
    mutating func encode(_ value: Int64) throws { set(.integer(Int(value))) }
    mutating func encode(_ value: UInt) throws { set(.unsigned(UInt64(value))) }
    mutating func encode(_ value: UInt8) throws { set(.unsigned(UInt64(value))) }
    mutating func encode(_ value: UInt16) throws { set(.unsigned(UInt64(value))) }
    mutating func encode(_ value: UInt32) throws { set(.unsigned(UInt64(value))) }
    mutating func encode(_ value: UInt64) throws { set(.unsigned(value)) }
    mutating func encode<T: Encodable>(_ value: T) throws { try encodeValue(value, into: node, path: codingPath) }
}
