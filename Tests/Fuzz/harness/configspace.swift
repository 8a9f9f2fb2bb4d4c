// The config-space walker: capability lists (standard and extended), PCIe port type, ACS,
// MSI-X layout and the pages it traps, on arbitrary config bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfigSpace(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = FuzzInput(data, size)
    let config = PCIConfigSpace(bytes: Array(input.bytes.prefix(4096)))
    _ = (config.vendorID, config.deviceID, config.command, config.revision, config.classCode, config.headerType)
    for id in 0...UInt8.max { _ = config.capabilityOffset(id) }
    for id in [0x0001, 0x000d, 0x0010, 0x0015, 0x001e, 0xffff] as [UInt16] { _ = config.extendedCapabilityOffset(id) }
    _ = config.expressPortType?.name
    if let acs = config.accessControlServices { _ = (acs.isolates, acs.enabled.names) }
    if let msix = config.msix {
        for bar in 0..<6 {
            for range in msix.trappedPages(bar: bar) {
                require(range.lowerBound % 4096 == 0 && range.upperBound % 4096 == 0, "trapped pages not page aligned: \(range)")
            }
        }
    }
    return 0
}
