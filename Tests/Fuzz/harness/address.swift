// The PCI address parsers: the user's forms (DDDD:BB:DD.F, BB:DD.F) and sysfs' canonical
// 12-byte form; every address parsed prints back in canonical form and parses to itself.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAddress(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = FuzzInput(data, size)
    let text = String(decoding: input.bytes, as: UTF8.self)
    if let address = try? PCIAddress(parsing: text) {
        let printed = address.description
        require((try? PCIAddress(parsing: printed)) == address, "\(printed) does not parse back")
        require(PCIAddress(canonical: Array(printed.utf8)) == address || printed.utf8.count != 12, "canonical form of \(printed)")
    }
    if let canonical = PCIAddress(canonical: input.bytes) {
        require((try? PCIAddress(parsing: canonical.description)) == canonical, "canonical \(canonical) does not parse back")
    }
    _ = parseHex(Substring(text), maxDigits: 16)
    return 0
}
