// Sparse-area arithmetic on kernel-sized values: `contains` and `excluding` with holes
// anywhere, including ranges that end at 2^64.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSparseArea(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let area = SparseArea(offset: input.u64(), size: input.u64())
    var holes: [Range<UInt64>] = []
    for _ in 0..<Int(input.byte() % 5) {
        let a = input.u64(), b = input.u64()
        holes.append(min(a, b)..<max(a, b))
    }
    let pieces = area.excluding(holes)
    var previousEnd: UInt64 = 0
    for piece in pieces {
        require(piece.size > 0, "empty piece")
        require(piece.offset >= area.offset, "piece before the area")
        require(piece.offset >= previousEnd, "pieces out of order or overlapping")
        require(piece.offset <= UInt64.max - piece.size, "piece runs past 2^64")
        previousEnd = piece.offset + piece.size
        for hole in holes where !hole.isEmpty {
            require(hole.upperBound <= piece.offset || hole.lowerBound >= previousEnd, "piece \(piece) overlaps hole \(hole)")
        }
        _ = area.contains(piece)
    }
    _ = area.contains(SparseArea(offset: input.u64(), size: input.u64()))
    return 0
}
