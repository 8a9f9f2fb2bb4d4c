// kvm-benchmark: memslot change latency through vfioctl's KVM layer against raw ioctls in C
// (same run, same pattern, same clock), and dirty-page harvesting cost, bitmap against ring.
//   swift run -c release --scratch-path .build-kvm kvm-benchmark [--quick]
#if canImport(Glibc)
import Glibc
#endif
import CKVMReference
import CLinuxUAPI
import KVM
import TestKit

let quick = CommandLine.arguments.contains("--quick")

func fail(_ message: String) -> Never {
    let line = Array("kvm-benchmark: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(1)
}

struct Stats {
    let mean: Double, median: Double
    /// Nanosecond samples, reported in microseconds.
    init(_ samples: [UInt64]) {
        let sorted = samples.sorted()
        mean = sorted.isEmpty ? 0 : Double(sorted.reduce(0, +)) / Double(sorted.count) / 1000
        median = sorted.isEmpty ? 0 : Double(sorted[sorted.count / 2]) / 1000
    }
}

func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : String(repeating: " ", count: width - s.count) + s }
func fmt(_ value: Double, _ digits: Int = 2) -> String {
    var text = String(Int((value * pow(10, Double(digits))).rounded()))
    while text.count <= digits { text = "0" + text }
    if digits > 0 { text.insert(".", at: text.index(text.endIndex, offsetBy: -digits)) }
    return text
}

guard KVMAvailability.present else { fail("/dev/kvm is not usable (load KVM, run as root or in group kvm)") }

// MARK: Memslot latency

/// The same pattern as ckvm_memslot_pattern, through VirtualMachine.
func layerPattern(_ n: Int, system: KVMSystem) throws -> (add: [UInt64], move: [UInt64], delete: [UInt64]) {
    let vm = try system.createVM()
    let memory = try GuestMemory(size: n * 4096)
    var add = [UInt64](repeating: 0, count: n), move = add, delete = add
    for i in 0..<n {
        let start = ckvm_now_ns()
        try vm.addSlot(MemslotID(slot: UInt16(i)), guestPhysicalAddress: UInt64(i) * 8192, memory: memory,
                       offset: i * 4096, size: 4096)
        add[i] = ckvm_now_ns() - start
    }
    for i in 0..<n {
        let start = ckvm_now_ns()
        try vm.moveSlot(MemslotID(slot: UInt16(i)), to: UInt64(i) * 8192 + 4096)
        move[i] = ckvm_now_ns() - start
    }
    for i in 0..<n {
        let start = ckvm_now_ns()
        try vm.deleteSlot(MemslotID(slot: UInt16(i)))
        delete[i] = ckvm_now_ns() - start
    }
    return (add, move, delete)
}

func referencePattern(_ n: Int, kvmFD: Int32) -> (add: [UInt64], move: [UInt64], delete: [UInt64]) {
    let vmFD = ckvm_create_vm(kvmFD)
    guard vmFD >= 0 else { fail("KVM_CREATE_VM (C): errno \(-vmFD)") }
    defer { close(vmFD) }
    // Reserved, never touched: KVM only records the host range.
    let length = n * 4096
    guard let base = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
          base != MAP_FAILED else { fail("mmap \(length)") }
    defer { munmap(base, length) }
    var add = [UInt64](repeating: 0, count: n), move = add, delete = add
    // Safety: each array holds n elements and the mapping n pages, as the C function requires.
    let rc = ckvm_memslot_pattern(vmFD, UInt64(UInt(bitPattern: base)), Int32(n), &add, &move, &delete)
    guard rc == 0 else { fail("KVM_SET_USER_MEMORY_REGION (C): errno \(-rc)") }
    return (add, move, delete)
}

func memslotBenchmark() throws {
    let system = try KVMSystem()
    let maxSlots = try system.createVM().capabilities.maxMemslots
    let kvmFD = open(KVMAvailability.devicePath, O_RDWR | O_CLOEXEC)
    guard kvmFD >= 0 else { fail("open /dev/kvm") }
    defer { close(kvmFD) }
    let counts = (quick ? [1, 16, 256, 4096] : [1, 16, 256, 4096, 32764]).map { min($0, maxSlots) }
    print("== memslot change latency, per KVM_SET_USER_MEMORY_REGION (us): vfioctl layer vs raw C ioctl")
    print("   (VM max \(maxSlots) slots; each slot 4 KiB; n adds, then n moves, then n deletes; C and Swift alternate)")
    print(pad("slots", 6) + pad("op", 8) + pad("vfioctl mean", 14) + pad("C mean", 10) + pad("ratio", 8)
          + pad("vfioctl med", 13) + pad("C med", 10) + pad("ratio", 8))
    for n in counts {
        // Repeat small counts so each figure rests on at least ~4096 operations (or 3 runs).
        let repeats = max(quick ? 1 : 3, min(4096 / max(n, 1), quick ? 64 : 256))
        var layer: [[UInt64]] = [[], [], []], reference: [[UInt64]] = [[], [], []]
        for _ in 0..<repeats {
            let c = referencePattern(n, kvmFD: kvmFD)
            let s = try layerPattern(n, system: system)
            reference[0] += c.add; reference[1] += c.move; reference[2] += c.delete
            layer[0] += s.add; layer[1] += s.move; layer[2] += s.delete
        }
        let table = tableOnly(n)
        for (index, op) in ["add", "move", "delete"].enumerated() {
            let l = Stats(layer[index]), r = Stats(reference[index])
            print(pad("\(n)", 6) + pad(op, 8) + pad(fmt(l.mean), 14) + pad(fmt(r.mean), 10) + pad(fmt(l.mean / r.mean, 3), 8)
                  + pad(fmt(l.median), 13) + pad(fmt(r.median), 10) + pad(fmt(l.median / r.median, 3), 8)
                  + "   table alone \(fmt(table[index], 0)) ns = \(fmt(table[index] / 10 / r.median, 2))% of C median")
        }
    }
}

/// The layer's own cost, without the kernel: the same pattern on a bare MemslotTable, mean ns
/// per add, move and delete. Deterministic where the ioctl timings above are noisy.
func tableOnly(_ n: Int) -> [Double] {
    var table = MemslotTable(slotsPerAddressSpace: max(n, 1))
    var totals: [UInt64] = [0, 0, 0]
    let host: UInt64 = 0x7f00_0000_0000
    do {
        var start = ckvm_now_ns()
        for i in 0..<n {
            try table.add(Memslot(id: MemslotID(slot: UInt16(i)), guestPhysicalAddress: UInt64(i) * 8192, size: 4096,
                                  userspaceAddress: host + UInt64(i) * 4096))
        }
        totals[0] = ckvm_now_ns() - start
        start = ckvm_now_ns()
        for i in 0..<n { try table.move(MemslotID(slot: UInt16(i)), to: UInt64(i) * 8192 + 4096) }
        totals[1] = ckvm_now_ns() - start
        start = ckvm_now_ns()
        for i in 0..<n { try table.remove(MemslotID(slot: UInt16(i))) }
        totals[2] = ckvm_now_ns() - start
    } catch {
        fail("table: \(error)")
    }
    return totals.map { Double($0) / Double(max(n, 1)) }
}

// MARK: Dirty harvesting

enum Mode: CaseIterable, CustomStringConvertible {
    case bitmap, bitmapManualProtect, ring
    var description: String {
        switch self {
        case .bitmap: return "bitmap (GET_DIRTY_LOG)"
        case .bitmapManualProtect: return "bitmap (GET+CLEAR_DIRTY_LOG)"
        case .ring: return "dirty ring"
        }
    }
}

struct HarvestResult { let rate: Double; let dirtyPages: Int; let msPerRound: Double; let nsPerPage: Double; let guestMsPerRound: Double }

let dataBase: UInt32 = 0x1000_0000

/// A VM with `bytes` of guest RAM at 256 MiB, all touched once, then logged; for each rate a
/// few rounds of the guest writing that fraction of pages (spread evenly), each followed by a
/// harvest through `collectDirtyPages`. Harvests inside a round (ring chunks) count to it.
func harvestBenchmark(bytes: Int, mode: Mode, rates: [Double], rounds: Int) throws -> [HarvestResult] {
    let pages = bytes / 4096
    let system = try KVMSystem()
    let vm = try system.createVM()
    try vm.setX86RealModeAreas()
    var chunk = UInt32(pages)
    switch mode {
    case .bitmap: break
    case .bitmapManualProtect: try vm.enableManualDirtyLogProtect()
    case .ring:
        let ringBytes = vm.capabilities.dirtyRingAcquireReleaseMaxBytes > 0
            ? vm.capabilities.dirtyRingAcquireReleaseMaxBytes : vm.capabilities.dirtyRingMaxBytes
        try vm.enableDirtyRing(bytes: ringBytes)
        // Harvest well before the soft limit: this host's KVM does not stop emulated code there.
        chunk = UInt32(ringBytes / MemoryLayout<kvm_dirty_gfn>.stride / 2)
    }
    let low = try GuestMemory(size: 0x10_0000)
    try low.write(GuestPrograms.pageWriter32, at: Int(GuestPrograms.pageWriterEntry))
    try vm.addSlot(MemslotID(slot: 0), guestPhysicalAddress: 0, memory: low)
    let data = try GuestMemory(size: bytes)
    let slot = try vm.addSlot(MemslotID(slot: 1), guestPhysicalAddress: UInt64(dataBase), memory: data).id
    let vcpu = try vm.createVCPU()

    /// Runs one round; returns (harvest ns, dirty pages reported, guest ns).
    func round(pagesToWrite: Int, stride: Int, harvest: Bool) throws -> (UInt64, Int, UInt64) {
        var harvestNs: UInt64 = 0, reported = 0, guestNs: UInt64 = 0
        func collect() throws {
            let start = ckvm_now_ns()
            let dirty = try vm.collectDirtyPages()
            harvestNs += ckvm_now_ns() - start
            reported += dirty.pages[slot]?.count ?? 0
        }
        while true {
            let start = ckvm_now_ns()
            let exit = try vcpu.run()
            guestNs += ckvm_now_ns() - start
            switch exit {
            case .io(GuestPrograms.chunkDonePort, .out, _, _, _), .dirtyRingFull:
                if harvest, mode == .ring { try collect() }
            case .io(GuestPrograms.roundDonePort, .out, _, _, _):
                if harvest { try collect() }
                return (harvestNs, reported, guestNs)
            default:
                fail("unexpected exit \(exit)")
            }
        }
    }
    func start(pagesToWrite: Int, stride: Int) throws {
        try vcpu.enterFlatProtectedMode(entry: GuestPrograms.pageWriterEntry, registers: GuestPrograms.pageWriterRegisters(
            first: dataBase, pages: UInt32(pagesToWrite), stride: UInt32(stride * 4096), pagesPerChunk: chunk))
    }
    // First touch without logging (slow here: ~6 us a page), then turn logging on.
    try start(pagesToWrite: pages, stride: 1)
    _ = try round(pagesToWrite: pages, stride: 1, harvest: false)
    try vm.setFlags(slot, .logDirtyPages)
    _ = try vm.collectDirtyPages()

    var results: [HarvestResult] = []
    for rate in rates {
        let count = max(1, Int((Double(pages) * rate).rounded()))
        let stride = max(1, pages / count)
        try start(pagesToWrite: count, stride: stride)
        var harvestNs: UInt64 = 0, guestNs: UInt64 = 0
        for _ in 0..<rounds {
            let (ns, reported, guest) = try round(pagesToWrite: count, stride: stride, harvest: true)
            guard reported == count else { fail("\(mode): \(reported) dirty pages reported, \(count) written") }
            harvestNs += ns
            guestNs += guest
        }
        let perRound = Double(harvestNs) / Double(rounds)
        results.append(HarvestResult(rate: rate, dirtyPages: count, msPerRound: perRound / 1e6,
                                     nsPerPage: perRound / Double(count), guestMsPerRound: Double(guestNs) / Double(rounds) / 1e6))
    }
    return results
}

/// Where the ring's ms per harvest crosses the bitmap's, by linear interpolation in the rate.
func crossing(ring: [HarvestResult], bitmap: [HarvestResult]) -> String {
    let diffs = zip(ring, bitmap).map { ($0.rate, $0.msPerRound - $1.msPerRound) }
    if diffs.allSatisfy({ $0.1 < 0 }) { return "ring cheaper at every measured rate" }
    if diffs.allSatisfy({ $0.1 >= 0 }) { return "bitmap cheaper at every measured rate" }
    for (a, b) in zip(diffs, diffs.dropFirst()) where (a.1 < 0) != (b.1 < 0) {
        let rate = a.0 + (b.0 - a.0) * (0 - a.1) / (b.1 - a.1)
        return "cross at about \(fmt(rate * 100, 2))% of pages dirty per harvest (ring cheaper \(a.1 < 0 ? "below" : "above"))"
    }
    return "no single crossing"
}

func dirtyBenchmark() throws {
    let sizes = quick ? [1 << 30] : [1 << 30, 3 << 30]
    let rates = quick ? [0.001, 0.01, 0.25] : [0.001, 0.003, 0.01, 0.03, 0.1, 0.25]
    let rounds = quick ? 2 : 3
    print("")
    print("== dirty harvesting through collectDirtyPages(): \(rounds) rounds per rate; the guest writes one byte to each chosen page")
    for size in sizes {
        print("-- guest RAM \(size >> 30) GiB (\(size / 4096) pages)")
        print(pad("mode", 30) + pad("dirty %", 9) + pad("pages", 9) + pad("ms/harvest", 12) + pad("ns/page", 10) + pad("guest ms", 10))
        var all: [Mode: [HarvestResult]] = [:]
        for mode in Mode.allCases {
            let results = try harvestBenchmark(bytes: size, mode: mode, rates: rates, rounds: rounds)
            all[mode] = results
            for r in results {
                print(pad(mode.description, 30) + pad(fmt(r.rate * 100, 1), 9) + pad("\(r.dirtyPages)", 9) + pad(fmt(r.msPerRound, 3), 12)
                      + pad(fmt(r.nsPerPage, 0), 10) + pad(fmt(r.guestMsPerRound, 0), 10))
            }
        }
        if let ring = all[.ring] {
            for mode in [Mode.bitmap, .bitmapManualProtect] {
                if let bitmap = all[mode] { print("   ring vs \(mode): \(crossing(ring: ring, bitmap: bitmap))") }
            }
        }
    }
}

do {
    print("kvm-benchmark\(quick ? " --quick" : "")")
    try memslotBenchmark()
    try dirtyBenchmark()
} catch {
    fail("\(error)")
}
