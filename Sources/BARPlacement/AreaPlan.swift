import TextFormat
/// Everything `vfioctl bar plan` says about one mappable area (a whole BAR or a sparse area):
/// vfioctl's placement against the naive ones, each with its predicted faults under the fixed
/// and the older kernel rule, and the fewest mappings any placement can get.
public struct AreaPlan: Sendable, Equatable {
    /// The area's bus address (its first byte).
    public let physicalStart: UInt64
    /// The area's length in bytes.
    public let length: UInt64
    /// vfioctl's alignment for the area: see `Placement.alignment`.
    public let alignment: UInt64
    /// The fewest mappings any placement can get, by page order (`Placement.minimumMappings`
    /// under the fault geometry).
    public let minimumMappings: [Int: UInt64]
    /// One prediction per `PlacementStrategy`, in `allCases` order, then "vfioctl+skew" when a
    /// skew was given.
    public let placements: [PlacementPrediction]

    /// The fewest mappings any placement can get, all orders together.
    public var minimumMappingCount: UInt64 { minimumMappings.values.reduce(0, +) }

    /// Plans the area with every strategy, plus vfioctl's placement moved by `skew` bytes.
    /// `geometry` places the area; `faultGeometry` (default: the same) is what the host's fault
    /// path tries (`PageGeometry.tried(under:)`): with THP refused, only 4 KiB pages.
    public static func make(physicalStart: UInt64, length: UInt64, skew: UInt64? = nil,
                            pattern: AccessPattern = .linear, geometry: PageGeometry = .x86_64,
                            faultGeometry: PageGeometry? = nil) throws(PlacementError) -> AreaPlan {
        let tried = faultGeometry ?? geometry
        let minimum = Placement.minimumMappings(physicalStart: physicalStart, length: length, geometry: tried)
        var placements: [PlacementPrediction] = []
        for strategy in PlacementStrategy.allCases {
            let start = strategy.virtualStart(physicalStart: physicalStart, length: length)
            placements.append(try PlacementPrediction.make(label: strategy.rawValue, strategy: strategy, skew: 0, virtualStart: start,
                                                           physicalStart: physicalStart, length: length, pattern: pattern,
                                                           geometry: tried, minimum: minimum))
        }
        if let skew {
            guard skew % PageGeometry.pageSize == 0 else { throw .notPageAligned(what: "skew", value: skew) }
            let (start, overflow) = PlacementStrategy.vfioctl.virtualStart(physicalStart: physicalStart, length: length).addingReportingOverflow(skew)
            guard !overflow else { throw .addressOverflow(what: "vfioctl's placement moved by the skew \(skew.hex())") }
            placements.append(try PlacementPrediction.make(label: "vfioctl+skew", strategy: .vfioctl, skew: skew, virtualStart: start,
                                                           physicalStart: physicalStart, length: length, pattern: pattern,
                                                           geometry: tried, minimum: minimum))
        }
        return AreaPlan(physicalStart: physicalStart, length: length,
                        alignment: Placement.alignment(physicalStart: physicalStart, length: length, geometry: geometry),
                        minimumMappings: minimum, placements: placements)
    }
}

/// One placement's predicted faults.
public struct PlacementPrediction: Sendable, Equatable {
    /// The strategy's raw value, or "vfioctl+skew".
    public let label: String
    /// The strategy that chose the placement before any skew.
    public let strategy: PlacementStrategy
    /// Bytes added to the strategy's start: 0 except for "vfioctl+skew".
    public let skew: UInt64
    /// The modelled virtual start (see `PlacementStrategy.virtualStart`).
    public let virtualStart: UInt64
    /// Under the fixed kernel (Linux 6.12 with "Align huge faults to order").
    public let fixed: FaultPrediction
    /// Under the handler as first merged (faulting address had to be aligned).
    public let unfixed: FaultPrediction
    /// For each huge order, largest first: whether this placement can ever use it, and why not
    /// (`Placement.verdicts`).
    public let verdicts: [HugeOrderVerdict]
    /// Whether the fixed kernel ends with the fewest possible mappings.
    public let reachesMinimum: Bool
    /// True when no huge order can ever be used at this placement although one fits the area.
    public let neverHuge: Bool

    static func make(label: String, strategy: PlacementStrategy, skew: UInt64, virtualStart: UInt64,
                     physicalStart: UInt64, length: UInt64, pattern: AccessPattern,
                     geometry: PageGeometry, minimum: [Int: UInt64]) throws(PlacementError) -> PlacementPrediction {
        let mapping = try MappingGeometry(virtualStart: virtualStart, length: length, physicalStart: physicalStart)
        let fixed = try FaultPlanner(mapping: mapping, geometry: geometry, model: .linux612).predict(pattern)
        let unfixed = try FaultPlanner(mapping: mapping, geometry: geometry, model: .linux612Unfixed).predict(pattern)
        let verdicts = Placement.verdicts(for: mapping, geometry: geometry)
        let hugeFits = minimum.keys.contains { $0 > 0 }
        return PlacementPrediction(label: label, strategy: strategy, skew: skew, virtualStart: virtualStart,
                                   fixed: fixed, unfixed: unfixed, verdicts: verdicts,
                                   reachesMinimum: fixed.mappingsByOrder == minimum,
                                   neverHuge: hugeFits && !verdicts.contains { $0.possible })
    }
}
