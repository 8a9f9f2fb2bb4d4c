// The sysfs `resource` parser, from text and from bytes, on arbitrary input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzResource(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = FuzzInput(data, size)
    let text = String(decoding: input.bytes, as: UTF8.self)
    let parsed = parseResourceFile(text)
    for bar in parsed.bars + (parsed.rom.map { [$0] } ?? []) {
        require(bar.size == 0 || bar.start <= UInt64.max - (bar.size - 1), "BAR \(bar.index) runs past 2^64")
    }
    var bytes = input.bytes + [UInt8](repeating: 0, count: 16)
    let fromBytes = parseResourceFile(&bytes, count: input.bytes.count)
    require(fromBytes.bars.count == parsed.bars.count, "text and byte parsers disagree")
    return 0
}
