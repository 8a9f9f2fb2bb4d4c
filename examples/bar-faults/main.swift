// Maps a BAR through VFIO at the best page order (vfioctl's placement: the virtual address
// congruent to the BAR's bus address modulo 1 GiB), touches every page once, and prints the
// fault planner's prediction beside what the kernel did: vfio-pci's huge_fault handler calls,
// by page order and outcome, counted in the kernel by a kretprobe with a histogram trigger.
//
//   bar-faults ADDRESS BAR [SKEW]     (as root; the device bound to vfio-pci; SKEW in bytes,
//                                      a 4 KiB multiple, moves the mapping off the placement)
//
// Exit status 0 when the kernel's counts equal the prediction, 1 when they differ or on error.
// Without tracefs kprobes (CONFIG_KPROBE_EVENTS, BTF for the order argument) it prints the
// prediction only and says why.
import BARPlacement
import Foundation
import PCIInventory
import VFIO

func fail(_ message: String, status: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("bar-faults: \(message)\n".utf8))
    exit(status)
}

/// Counts vfio_pci_mmap_huge_fault calls by (order, return value) in the kernel.
struct KernelFaultCounter {
    static let tracefs = "/sys/kernel/tracing"
    static let event = "vfioctl_bar_faults"
    static let trigger = "hist:keys=order,ret"
    var eventDirectory: String { "\(Self.tracefs)/events/kprobes/\(Self.event)" }

    /// Arms the probe; returns nil (and why) where the kernel has no kprobe events.
    static func arm() -> (KernelFaultCounter?, String?) {
        let counter = KernelFaultCounter()
        counter.disarm()  // a probe left by an interrupted run would add its counts to ours
        let probe = "r:\(event) vfio_pci_mmap_huge_fault order=$arg2:u32 ret=$retval:u32\n"
        guard append(probe, to: "\(tracefs)/kprobe_events") else {
            return (nil, "cannot add a kretprobe in \(tracefs)/kprobe_events (needs root, tracefs, CONFIG_KPROBE_EVENTS and a vfio-pci with huge_fault, Linux 6.12+)")
        }
        guard append(trigger, to: "\(counter.eventDirectory)/trigger") else {
            counter.disarm()
            return (nil, "cannot add a histogram trigger (CONFIG_HIST_TRIGGERS)")
        }
        return (counter, nil)
    }

    /// Calls by (order, outcome), from the histogram. ret 256 is VM_FAULT_NOPAGE (the mapping
    /// was inserted), 2048 VM_FAULT_FALLBACK (the kernel retries with a smaller order).
    func read() -> [String: UInt64] {
        guard let text = try? String(contentsOfFile: "\(eventDirectory)/hist", encoding: .utf8) else { return [:] }
        var counts: [String: UInt64] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("{") {
            let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { UInt64($0) }
            guard numbers.count == 3 else { continue }
            let outcome = numbers[1] == 256 ? "inserted" : numbers[1] == 2048 ? "fallback" : "ret=\(numbers[1])"
            counts["order=\(numbers[0]) outcome=\(outcome)", default: 0] += numbers[2]
        }
        return counts
    }

    func disarm() {
        _ = Self.append("!\(Self.trigger)", to: "\(eventDirectory)/trigger")
        _ = Self.append("-:\(Self.event)\n", to: "\(Self.tracefs)/kprobe_events")
    }

    static func append(_ text: String, to path: String) -> Bool {
        guard let handle = FileHandle(forWritingAtPath: path) else { return false }
        defer { try? handle.close() }
        do { try handle.write(contentsOf: Data(text.utf8)) } catch { return false }
        return true
    }
}

let arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count >= 2, let address = try? PCIAddress(parsing: arguments[0]), let bar = Int(arguments[1]),
      (0..<PCIRegion.barCount).contains(bar) else {
    fail("usage: bar-faults ADDRESS BAR [SKEW]   (ADDRESS like 0000:00:03.0, BAR 0-5)", status: 2)
}
let skew = arguments.count > 2 ? UInt64(arguments[2]) : 0
guard let skew, skew % PageGeometry.pageSize == 0 else { fail("SKEW must be a multiple of 4096 bytes", status: 2) }

do {
    let device = try openVFIODevice(address)
    let region = try device.regionInfo(PCIRegion.bar(bar))
    let resource = try device.barResource(bar)
    // Read-only, and with the rest of the 1 GiB page-table slots it touches kept reserved, so
    // nothing else changes the page tables the prediction starts from.
    let mapping = try device.mapPlaced(region, options: PlacementOptions(skew: skew, guardPageTableSlots: true, writable: false))
    let geometry = try MappingGeometry(virtualStart: mapping.virtualStart, length: UInt64(mapping.size),
                                       physicalStart: resource.start + mapping.regionOffset)
    let prediction = try FaultPlanner(mapping: geometry).predict(.linear)
    let minimum = Placement.minimumMappings(physicalStart: geometry.physicalStart, length: geometry.length)

    let (counter, why) = KernelFaultCounter.arm()
    let clock = ContinuousClock()
    let started = clock.now
    _ = try mapping.touchPages(Array(0..<geometry.pageCount))
    let elapsed = clock.now - started
    let measured = counter?.read()
    counter?.disarm()
    try mapping.unmap()

    print("\(address) BAR \(bar): \(geometry.length >> 20) MiB at bus 0x\(String(geometry.physicalStart, radix: 16)), mapped at 0x\(String(geometry.virtualStart, radix: 16)) (skew 0x\(String(skew, radix: 16)))")
    print("touched \(geometry.pageCount) pages in \(elapsed)")
    print("mappings predicted: \(prediction.mappingsByOrder.sorted { $0.key > $1.key }.map { "order \($0.key) x\($0.value)" }.joined(separator: ", ")); fewest possible: \(minimum.values.reduce(0, +))")
    print(String(repeating: " ", count: 2) + "handler call".padding(toLength: 30, withPad: " ", startingAt: 0) + "planner".padding(toLength: 10, withPad: " ", startingAt: 0) + "kernel")
    var predicted: [String: UInt64] = [:]
    for call in prediction.calls { predicted["order=\(call.order) outcome=\(call.outcome.rawValue)"] = call.count }
    for key in Set(predicted.keys).union(measured.map { Array($0.keys) } ?? []).sorted() {
        let kernel = measured.map { String($0[key] ?? 0) } ?? "-"
        print("  " + key.padding(toLength: 30, withPad: " ", startingAt: 0) + String(predicted[key] ?? 0).padding(toLength: 10, withPad: " ", startingAt: 0) + kernel)
    }
    guard let measured else {
        print("kernel counts unavailable: \(why ?? "?")")
        exit(0)
    }
    if measured == predicted {
        print("the kernel did exactly what the planner predicted")
    } else {
        fail("the kernel's huge-fault calls differ from the prediction")
    }
} catch {
    fail("\(error)")
}
