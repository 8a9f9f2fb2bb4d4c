// The placement and fault planners on arbitrary geometries: nothing traps, errors are
// errors, and on small mappings the block planner equals the access-by-access walk.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPlanner(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let page = PageGeometry.pageSize
    let flags = input.byte()
    let small = flags & 1 != 0
    // Small mappings (up to 8 MiB around slot boundaries) get the differential check; large
    // ones (up to 2^56 bytes) only the no-trap check, which the block planner answers fast.
    let virtualStart = input.u64() & ~(page - 1) & ((1 << 48) - 1)
    let physicalStart = input.u64() & ~(page - 1)
    let rawLength = input.u64()
    let length = small ? (rawLength % 2048 + 1) * page : (rawLength & ((1 << 56) - 1)) & ~(page - 1)
    let orders: [[Int]] = [[0, 9, 18], [0, 9], [0, 18], [0]]
    let models: [KernelFaultModel] = [.linux612, .linux612Unfixed,
                                      KernelFaultModel(rule: .alignedBlock, retriesPTEFaultUnderMmapLock: false),
                                      KernelFaultModel(rule: .alignedAddress, retriesPTEFaultUnderMmapLock: false)]
    let model = models[Int(flags >> 1 & 3)]
    let seed = input.u64()
    var pattern: AccessPattern = [.linear, .reverse, .random(seed: seed)][Int(flags >> 3) % 3]
    var tables: [TableSlot] = []
    for _ in 0..<Int(input.byte() % 4) {
        tables.append(TableSlot(order: input.byte() & 1 == 0 ? 9 : 18, address: virtualStart &+ (input.u64() % (length + 4 * page)) &- 2 * page))
    }
    guard let geometry = try? PageGeometry(orders: orders[Int(flags >> 5 & 3)]) else { return 0 }
    // Placement arithmetic on any values.
    _ = Placement.minimumMappings(physicalStart: physicalStart, length: length, geometry: geometry)
    _ = Placement.alignment(physicalStart: physicalStart, length: length, geometry: geometry)
    _ = try? AreaPlan.make(physicalStart: physicalStart, length: length, skew: input.u64() & ~(page - 1), geometry: geometry)
    guard let mapping = try? MappingGeometry(virtualStart: virtualStart, length: length, physicalStart: physicalStart) else { return 0 }
    _ = Placement.verdicts(for: mapping, geometry: geometry)
    let planner = FaultPlanner(mapping: mapping, geometry: geometry, model: model, tablesPresent: tables)
    if !small, case .random = pattern, model.rule == .alignedAddress, length > 1 << 26 { pattern = .linear }
    guard let blocks = try? planner.predict(pattern) else { return 0 }
    require(blocks.faultingAccesses == blocks.mappingCount, "faults \(blocks.faultingAccesses) != mappings \(blocks.mappingCount)")
    if small {
        let walked = try? planner.predict(pattern) { _ in }
        require(walked == blocks, "block planner \(blocks) != walk \(String(describing: walked)) for \(mapping) \(model) \(pattern.name) \(tables)")
        let list = try? planner.predict(.pages(Array(input.remaining.prefix(64)).map { UInt64($0) % mapping.pageCount }))
        _ = list?.accesses
    }
    return 0
}
