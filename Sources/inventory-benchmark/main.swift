// Times `vfioctl list --json` against `lspci -D -nn -k` on the same large fake sysfs tree,
// plus the in-process `PCIInventory.scan`. Build with `swift build -c release` for real numbers.
import Foundation
import PCIInventory
import SysfsFixtures

let usage = """
    usage: inventory-benchmark [--devices N] [--iterations N] [--warmup N] [--vfioctl PATH]
                               [--lspci PATH] [--work-dir DIR] [--keep-tree] [--json]

    Builds an N-device SR-IOV fixture (default 2000) and times, interleaved, N runs each
    (default 20, after 2 warm-up runs) of:
      vfioctl --sysfs-root ROOT list --json
      lspci -D -nn -k -O sysfs.path=ROOT/bus/pci
      PCIInventory.scan(root: ROOT, names: PCINameDatabase())   (in process)
    Both tools must list every fixture device, or the run fails.
    vfioctl defaults to the binary next to this one; the tree goes to /dev/shm when it has room.
    """

struct Options {
    var deviceCount = 2000
    var iterations = 20
    var warmup = 2
    var vfioctlPath: String?
    var lspciPath: String?
    var workDirectory: String?
    var keepTree = false
    var json = false
}

struct BenchmarkFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func parseOptions(_ arguments: [String]) throws -> Options {
    var options = Options()
    var remaining = arguments[...]
    func value(for flag: String) throws -> String {
        guard let next = remaining.popFirst() else { throw BenchmarkFailure("\(flag) needs a value\n\n\(usage)") }
        return next
    }
    func positiveInteger(for flag: String, allowZero: Bool = false) throws -> Int {
        let text = try value(for: flag)
        guard let number = Int(text), number > 0 || (allowZero && number == 0) else {
            throw BenchmarkFailure("\(flag) needs a \(allowZero ? "non-negative" : "positive") integer, got \(text)")
        }
        return number
    }
    while let argument = remaining.popFirst() {
        switch argument {
        case "--devices": options.deviceCount = try positiveInteger(for: argument)
        case "--iterations": options.iterations = try positiveInteger(for: argument)
        case "--warmup": options.warmup = try positiveInteger(for: argument, allowZero: true)
        case "--vfioctl": options.vfioctlPath = try value(for: argument)
        case "--lspci": options.lspciPath = try value(for: argument)
        case "--work-dir": options.workDirectory = try value(for: argument)
        case "--keep-tree": options.keepTree = true
        case "--json": options.json = true
        case "-h", "--help":
            print(usage)
            exit(0)
        default: throw BenchmarkFailure("unknown argument \(argument)\n\n\(usage)")
        }
    }
    return options
}

// MARK: locating things

func executableDirectory() -> String {
    let selfPath = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        ?? Bundle.main.executablePath
        ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: selfPath).resolvingSymlinksInPath().deletingLastPathComponent().path
}

func locateVfioctl(_ explicit: String?) throws -> String {
    let path = explicit ?? executableDirectory() + "/vfioctl"
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw BenchmarkFailure("no vfioctl at \(path); build it (swift build -c release) or pass --vfioctl PATH")
    }
    return path
}

func locateLspci(_ explicit: String?) throws -> String {
    if let explicit {
        guard FileManager.default.isExecutableFile(atPath: explicit) else { throw BenchmarkFailure("no lspci at \(explicit)") }
        return explicit
    }
    let searchPath = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    let candidates = searchPath.split(separator: ":").map { "\($0)/lspci" } + ["/usr/bin/lspci", "/usr/sbin/lspci"]
    guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        throw BenchmarkFailure("lspci not found (Debian: apt-get install pciutils) or pass --lspci PATH")
    }
    return found
}

/// /dev/shm keeps tree building and reading off the disk; it needs room for ~50 entries per device.
func defaultWorkDirectory(deviceCount: Int) -> String {
    let shm = "/dev/shm"
    var stats = statvfs()
    let neededBytes = UInt64(deviceCount) * 64 * 4096
    if FileManager.default.isWritableFile(atPath: shm), statvfs(shm, &stats) == 0,
       UInt64(stats.f_bavail) * UInt64(stats.f_frsize) > neededBytes * 2 {
        return shm
    }
    return NSTemporaryDirectory()
}

// MARK: running and timing

struct ToolRun {
    var elapsed: Duration
    var output: Data
    var exitCode: Int32
    var standardError: String
}

/// Runs a command to completion, timing from spawn until its stdout is drained and it has exited.
func runTimed(_ executable: String, _ arguments: [String], errorLog: String) throws -> ToolRun {
    guard FileManager.default.createFile(atPath: errorLog, contents: nil),
          let errorHandle = FileHandle(forWritingAtPath: errorLog) else { throw BenchmarkFailure("cannot write \(errorLog)") }
    defer { try? errorHandle.close() }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    environment["LC_ALL"] = "C"
    process.environment = environment
    let outputPipe = Pipe()
    process.standardOutput = outputPipe
    process.standardError = errorHandle  // a file, so a chatty stderr can never stall the child
    let clock = ContinuousClock()
    let start = clock.now
    try process.run()
    let output = outputPipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let elapsed = clock.now - start
    let standardError = (try? String(contentsOfFile: errorLog, encoding: .utf8)) ?? ""
    return ToolRun(elapsed: elapsed, output: output, exitCode: process.terminationStatus, standardError: standardError)
}

/// Addresses in `vfioctl list --json`: a top-level array of objects with "address" (or {"devices": [...]}).
func vfioctlAddresses(_ output: Data) throws -> [String] {
    let document = try JSONSerialization.jsonObject(with: output)
    let entries = (document as? [Any]) ?? ((document as? [String: Any])?["devices"] as? [Any])
    guard let entries else { throw BenchmarkFailure("vfioctl --json printed neither an array nor {\"devices\": [...]}") }
    return entries.map { (($0 as? [String: Any])?["address"] as? String) ?? "<no address>" }
}

/// Addresses in `lspci -D` output: the first word of each line that is not an indented detail line.
func lspciAddresses(_ output: Data) -> [String] {
    String(decoding: output, as: UTF8.self)
        .split(separator: "\n")
        .filter { !$0.hasPrefix("\t") && !$0.hasPrefix(" ") }
        .compactMap { $0.split(separator: " ").first.map(String.init) }
}

struct Statistics: Encodable {
    let samplesMilliseconds: [Double]
    let minimum: Double
    let median: Double
    let mean: Double
    let maximum: Double

    init(_ samples: [Duration]) {
        let milliseconds = samples.map { Double($0.components.seconds) * 1000 + Double($0.components.attoseconds) / 1e15 }
        let sorted = milliseconds.sorted()
        samplesMilliseconds = milliseconds
        minimum = sorted.first ?? 0
        maximum = sorted.last ?? 0
        mean = sorted.isEmpty ? 0 : sorted.reduce(0, +) / Double(sorted.count)
        let middle = sorted.count / 2
        median = sorted.isEmpty ? 0 : sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}

struct Measurement: Encodable {
    let name: String
    let command: String
    let devicesListed: Int
    let statistics: Statistics
}

struct Report: Encodable {
    let fixture: String
    let deviceCount: Int
    let treePath: String
    let treeBuildSeconds: Double
    let iterations: Int
    let warmup: Int
    let cpuCount: Int
    let measurements: [Measurement]
    let ratioVfioctlToLspciMedian: Double
    let ratioVfioctlToLspciMinimum: Double
}

func format(_ milliseconds: Double) -> String {
    String(format: "%9.2f ms", milliseconds)
}

// MARK: main

func runBenchmark(_ options: Options) throws -> Report {
    let vfioctl = try locateVfioctl(options.vfioctlPath)
    let lspci = try locateLspci(options.lspciPath)
    let host = FixtureHost.largeSRIOVHost(deviceCount: options.deviceCount)
    let expectedAddresses = Set(host.devices.map(\.address.description))

    let workDirectory = options.workDirectory ?? defaultWorkDirectory(deviceCount: options.deviceCount)
    let buildStart = ContinuousClock.now
    let tree = try TemporarySysfsTree.create(host, in: workDirectory, prefix: "vfioctl-bench")
    let buildTime = ContinuousClock.now - buildStart
    defer {
        if options.keepTree {
            FileHandle.standardError.write(Data("kept tree at \(tree.rootPath)\n".utf8))
        } else {
            try? tree.remove()
        }
    }
    let errorLog = tree.rootPath + ".stderr"
    defer { try? FileManager.default.removeItem(atPath: errorLog) }

    let vfioctlArguments = ["--sysfs-root", tree.rootPath, "list", "--json"]
    let lspciArguments = ["-D", "-nn", "-k", "-O", "sysfs.path=\(tree.pciBusPath)"]

    // Fairness check first: both tools must list exactly the fixture's devices.
    let vfioctlCheck = try runTimed(vfioctl, vfioctlArguments, errorLog: errorLog)
    guard vfioctlCheck.exitCode == 0 else {
        throw BenchmarkFailure("vfioctl exited \(vfioctlCheck.exitCode): \(vfioctlCheck.standardError)")
    }
    let vfioctlListed = try vfioctlAddresses(vfioctlCheck.output)
    guard vfioctlListed.count == host.devices.count, Set(vfioctlListed) == expectedAddresses else {
        throw BenchmarkFailure("vfioctl listed \(vfioctlListed.count) devices, the fixture has \(host.devices.count)")
    }
    let lspciCheck = try runTimed(lspci, lspciArguments, errorLog: errorLog)
    guard lspciCheck.exitCode == 0 else {
        throw BenchmarkFailure("lspci exited \(lspciCheck.exitCode): \(lspciCheck.standardError)")
    }
    let lspciListed = lspciAddresses(lspciCheck.output)
    guard lspciListed.count == host.devices.count, Set(lspciListed) == expectedAddresses else {
        throw BenchmarkFailure("lspci listed \(lspciListed.count) devices, the fixture has \(host.devices.count)")
    }

    // Interleave the tools so drift in machine load hits both alike.
    var vfioctlSamples: [Duration] = []
    var lspciSamples: [Duration] = []
    var scanSamples: [Duration] = []
    var scannedDevices = 0
    let root = SysfsRoot(path: tree.rootPath)
    for round in 0..<(options.warmup + options.iterations) {
        let vfioctlRun = try runTimed(vfioctl, vfioctlArguments, errorLog: errorLog)
        let lspciRun = try runTimed(lspci, lspciArguments, errorLog: errorLog)
        guard vfioctlRun.exitCode == 0, lspciRun.exitCode == 0 else {
            throw BenchmarkFailure("a tool failed mid-run: vfioctl \(vfioctlRun.exitCode), lspci \(lspciRun.exitCode)")
        }
        let scanStart = ContinuousClock.now
        // A fresh name database each round, as each CLI run opens its own.
        let inventory = try PCIInventory.scan(root: root, detail: .summary, names: PCINameDatabase())
        let scanTime = ContinuousClock.now - scanStart
        scannedDevices = inventory.devices.count
        guard round >= options.warmup else { continue }
        vfioctlSamples.append(vfioctlRun.elapsed)
        lspciSamples.append(lspciRun.elapsed)
        scanSamples.append(scanTime)
    }
    guard scannedDevices == host.devices.count else {
        throw BenchmarkFailure("PCIInventory.scan found \(scannedDevices) devices, the fixture has \(host.devices.count)")
    }

    let vfioctlStatistics = Statistics(vfioctlSamples)
    let lspciStatistics = Statistics(lspciSamples)
    let physicalFunctions = host.devices.filter { $0.sriov != nil }.count
    return Report(
        fixture: "largeSRIOVHost(deviceCount: \(options.deviceCount)): 1 host bridge, \(physicalFunctions) root ports, "
            + "\(physicalFunctions) PFs, \(options.deviceCount - 1 - 2 * physicalFunctions) VFs",
        deviceCount: host.devices.count,
        treePath: tree.rootPath,
        treeBuildSeconds: Statistics([buildTime]).minimum / 1000,
        iterations: options.iterations,
        warmup: options.warmup,
        cpuCount: ProcessInfo.processInfo.activeProcessorCount,
        measurements: [
            Measurement(name: "vfioctl", command: ([vfioctl] + vfioctlArguments).joined(separator: " "),
                        devicesListed: vfioctlListed.count, statistics: vfioctlStatistics),
            Measurement(name: "lspci", command: ([lspci] + lspciArguments).joined(separator: " "),
                        devicesListed: lspciListed.count, statistics: lspciStatistics),
            Measurement(name: "PCIInventory.scan (in process)",
                        command: "PCIInventory.scan(root: SysfsRoot(path: ROOT), detail: .summary, names: PCINameDatabase())",
                        devicesListed: scannedDevices, statistics: Statistics(scanSamples)),
        ],
        ratioVfioctlToLspciMedian: vfioctlStatistics.median / lspciStatistics.median,
        ratioVfioctlToLspciMinimum: vfioctlStatistics.minimum / lspciStatistics.minimum
    )
}

func printText(_ report: Report) {
    print("fixture: \(report.fixture)")
    print("tree:    \(report.treePath) (built in \(String(format: "%.2f", report.treeBuildSeconds)) s)")
    print("runs:    \(report.iterations) timed after \(report.warmup) warm-up, tools interleaved; \(report.cpuCount) CPUs")
    print("")
    print("tool                                   min          median       mean         max      devices")
    for measurement in report.measurements {
        let statistics = measurement.statistics
        let name = measurement.name.padding(toLength: 34, withPad: " ", startingAt: 0)
        print("\(name) \(format(statistics.minimum))  \(format(statistics.median))  \(format(statistics.mean))  \(format(statistics.maximum))  \(measurement.devicesListed)")
    }
    print("")
    print(String(format: "vfioctl / lspci: %.2fx (median), %.2fx (min)", report.ratioVfioctlToLspciMedian, report.ratioVfioctlToLspciMinimum))
    print("")
    for measurement in report.measurements { print("\(measurement.name): \(measurement.command)") }
}

do {
    let options = try parseOptions(Array(CommandLine.arguments.dropFirst()))
    let report = try runBenchmark(options)
    if options.json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    } else {
        printText(report)
    }
} catch {
    FileHandle.standardError.write(Data("inventory-benchmark: \(error)\n".utf8))
    exit(1)
}
