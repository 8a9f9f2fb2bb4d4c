import Foundation

// The CDI writer's inputs (`vfioctl cdi`): the kind the user names, and the device names, node
// paths and annotations that come from sysfs, rendered by the JSON writer every command uses.
// - a kind is accepted only when it is VENDOR/CLASS in the CDI spec's characters, and renders
//   back as given;
// - every string, whatever its bytes, reads back from the rendered spec as itself (no value
//   escapes its field), and the document is byte-for-byte what Foundation's encoder writes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCDI(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    func text() -> String {
        let length = Int(input.byte() % 48)
        return String(decoding: (0..<length).map { _ in input.byte() }, as: UTF8.self)
    }
    let kindText = text()
    if let kind = CDIKind(parsing: kindText) {
        require(kind.description == kindText, "kind \(kindText) renders as \(kind)")
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./".utf8)
        require(kindText.utf8.allSatisfy(allowed.contains), "kind \(kindText) has a character CDI does not allow")
        require(kindText.utf8.filter { $0 == UInt8(ascii: "/") }.count == 1, "kind \(kindText) is not VENDOR/CLASS")
        require(CDIKind.isName(kind.deviceClass), "class \(kind.deviceClass)")
    }
    // A spec shaped like `vfioctl cdi`'s, every value from the input.
    let name = text(), address = text(), group = text(), ids = text(), path = text()
    let node: (String) -> JSONValue = { .object([("path", .string($0))]) }
    let spec = JSONValue.object([
        ("cdiVersion", .string("0.6.0")),
        ("kind", .string(kindText)),
        ("devices", .array([.object([
            ("name", .string(name)),
            ("annotations", .object([("vfioctl/pci-address", .string(address)), ("vfioctl/iommu-group", .string(group)),
                                     ("vfioctl/vendor-device", .string(ids))])),
            ("containerEdits", .object([("deviceNodes", .array([node(path)]))])),
        ])])),
        ("containerEdits", .object([("deviceNodes", .array([node("/dev/vfio/vfio")]))])),
    ])
    let rendered = spec.renderedBytes()
    guard let document = try? JSONSerialization.jsonObject(with: Data(rendered)) as? [String: Any],
          let devices = document["devices"] as? [[String: Any]], devices.count == 1, document.count == 4,
          let annotations = devices[0]["annotations"] as? [String: String], annotations.count == 3,
          let edits = devices[0]["containerEdits"] as? [String: Any],
          let nodes = edits["deviceNodes"] as? [[String: String]], nodes.count == 1 else {
        fatalError("invariant: the rendered spec does not read back as a spec: \(String(decoding: rendered, as: UTF8.self))")
    }
    require(document["kind"] as? String == kindText, "kind")
    require(devices[0]["name"] as? String == name, "name")
    require(annotations == ["vfioctl/pci-address": address, "vfioctl/iommu-group": group, "vfioctl/vendor-device": ids], "annotations")
    require(nodes[0] == ["path": path], "node path")
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    if let foundation = try? encoder.encode(spec) {
        require(Array(foundation) == rendered, "differs from JSONEncoder:\n\(String(decoding: rendered, as: UTF8.self))\n\(String(decoding: foundation, as: UTF8.self))")
    }
    return 0
}
