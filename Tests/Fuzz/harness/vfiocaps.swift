// VFIO capability chains (region info and IOMMU info) on arbitrary buffers: loops, offsets
// past the end, truncated sparse-mmap and IOVA-range arrays; then the sparse areas found,
// less holes, as a VMM would map them.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVFIOCapabilities(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let first = Int(input.u16())
    let buffer = InfoBuffer(bytes: Array(input.remaining))
    let region = RegionCapabilities.parse(buffer, firstOffset: first)
    let iommu = IOMMUCapabilities.parse(buffer, firstOffset: first)
    _ = iommu.iovaRanges?.count
    for area in region.sparseAreas ?? [] {
        let holes: [Range<UInt64>] = [area.offset..<(area.offset &+ 4096 < area.offset ? area.offset : area.offset &+ 4096)]
        for piece in area.excluding(holes) { require(area.contains(piece), "piece \(piece) outside \(area)") }
    }
    return 0
}
