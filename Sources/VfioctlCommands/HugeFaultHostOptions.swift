import ArgumentParser
import BARPlacement
import HostKernel

extension TransparentHugePageMode: ExpressibleByArgument {}
extension ProcessTHPSetting: ExpressibleByArgument {}
extension KernelVersion: ExpressibleByArgument {
    public init?(argument: String) { self.init(release: argument) }
}

/// The host facts that decide whether the kernel tries huge faults on a BAR mapping, read from
/// this host (sysfs root, /proc, this process's prctl) with what-if overrides for `bar plan`.
struct HugeFaultHostOptions: ParsableArguments {
    @Option(name: .customLong("thp"), help: ArgumentHelp("Plan for this THP mode (always, madvise, never) instead of the host's transparent_hugepage/enabled.", valueName: "mode"))
    var mode: TransparentHugePageMode?
    @Option(name: .long, help: ArgumentHelp("Plan for this kernel release (6.12.95, 7.3.4) instead of the running one.", valueName: "release"))
    var kernel: KernelVersion?
    @Option(name: .customLong("process-thp"), help: ArgumentHelp("Plan for a process whose prctl THP switch is inherited, disabled or disabled-except-advised.", valueName: "setting"))
    var process: ProcessTHPSetting?
    @Flag(name: .customLong("no-madvise"), help: "Plan a mapping without MADV_HUGEPAGE, as QEMU maps BARs (vfioctl's library advises every BAR mapping).")
    var noMadvise = false
    @Option(name: .long, help: .hidden) var procRoot: String = "/proc"

    var advice: MappingHugePageAdvice { noMadvise ? .none : .hugePage }

    /// The host with the overrides applied; reading is skipped where every fact is given.
    func resolve(sysfsRoot: String) throws -> HugeFaultHost {
        if let kernel, let mode { return HugeFaultHost(kernel: kernel, mode: mode, process: process ?? .inherited) }
        var host: HugeFaultHost
        do {
            host = try HugeFaultHostReader(sysfsRoot: sysfsRoot, procRoot: procRoot).read(processSetting: process)
        } catch {
            throw CommandFailure("\(error.description); give --kernel and --thp to plan for a host by hand")
        }
        if let kernel { host.kernel = kernel }
        if let mode { host.mode = mode }
        return host
    }
}

/// Which fault-path rule applied to a mapping, for text and JSON (absent facts are null).
struct HugeFaultRuleJSON: Encodable, Equatable {
    let kernel: String
    let thpMode: String?
    let processTHP: String
    let advice: String
    let rule: String
    let hugeFaults: Bool
    let reason: String

    enum CodingKeys: String, CodingKey {
        case kernel, advice, rule, reason
        case thpMode = "thp_mode", processTHP = "process_thp", hugeFaults = "huge_faults"
    }

    init(host: HugeFaultHost, advice: MappingHugePageAdvice) {
        kernel = host.kernel.description
        thpMode = host.mode?.rawValue
        processTHP = host.process.rawValue
        self.advice = advice.rawValue
        let gate = host.gate(for: advice)
        rule = gate.rawValue
        hugeFaults = gate.allowsHugeFaults
        reason = host.explanation(for: advice)
    }

    /// "huge faults: tried (thp-madvise-advised): kernel ... " for text output.
    var textLine: String {
        "huge faults \(hugeFaults ? "tried" : "refused") [\(rule)], \(advice == MappingHugePageAdvice.none.rawValue ? "no madvise" : advice): \(reason)"
    }
}
