import BARPlacement
import TextFormat

// The planner's predictions as `bar plan` and `bar touch` report them.

struct MappingCountJSON: Encodable, Equatable {
    let order: Int
    let pageSize: UInt64
    let count: UInt64
    enum CodingKeys: String, CodingKey { case order, count, pageSize = "page_size" }

    static func list(_ counts: [Int: UInt64]) -> [MappingCountJSON] {
        counts.keys.sorted(by: >).map { MappingCountJSON(order: $0, pageSize: PageGeometry.bytes(order: $0), count: counts[$0] ?? 0) }
    }
    static func text(_ list: [MappingCountJSON]) -> String {
        list.map { "\($0.count) x \(pageSizeName($0.pageSize))" }.joined(separator: " + ")
    }
}

struct CallCountJSON: Encodable, Equatable {
    let order: Int
    let outcome: String
    let count: UInt64
}

struct PredictionJSON: Encodable, Equatable {
    let mappings: [MappingCountJSON]
    let mappingCount: UInt64
    let faults: UInt64
    let calls: [CallCountJSON]
    enum CodingKeys: String, CodingKey { case mappings, faults, calls, mappingCount = "mapping_count" }

    init(_ prediction: FaultPrediction) {
        mappings = MappingCountJSON.list(prediction.mappingsByOrder)
        mappingCount = prediction.mappingCount
        faults = prediction.faultingAccesses
        calls = prediction.calls.map { CallCountJSON(order: $0.order, outcome: $0.outcome.rawValue, count: $0.count) }
    }
}

struct VerdictJSON: Encodable, Equatable {
    let order: Int
    let possible: Bool
    let reason: String?
}

struct PlacementJSON: Encodable {
    let label: String
    let strategy: String
    let skew: UInt64
    let virtualOffsetIn1GiB: UInt64
    let fixed: PredictionJSON
    let olderKernel: PredictionJSON
    let reachesMinimum: Bool
    let neverHuge: Bool
    let verdicts: [VerdictJSON]
    enum CodingKeys: String, CodingKey {
        case label, strategy, skew, fixed, verdicts
        case virtualOffsetIn1GiB = "va_mod_1g", olderKernel = "older_kernel", reachesMinimum = "reaches_minimum", neverHuge = "never_huge"
    }

    init(_ placement: PlacementPrediction) {
        label = placement.label
        strategy = placement.strategy.rawValue
        skew = placement.skew
        virtualOffsetIn1GiB = placement.virtualStart % PageGeometry.bytes(order: 18)
        fixed = PredictionJSON(placement.fixed)
        olderKernel = PredictionJSON(placement.unfixed)
        reachesMinimum = placement.reachesMinimum
        neverHuge = placement.neverHuge
        verdicts = placement.verdicts.map { VerdictJSON(order: $0.order, possible: $0.possible, reason: $0.reason) }
    }
}

