import BARPlacement
import Foundation
import HostKernel
import PCIInventory
import TextFormat

extension Doctor {
    /// What the host's kernel and QEMU miss from `KernelHistory.versionFacts`, with the cost for
    /// the largest BAR on vfio-pci where the fact is about BAR mappings.
    static func versions(_ host: HostReadiness) -> [Finding] {
        var findings: [Finding] = []
        let largest = host.inventory.devices
            .filter { $0.driver.map(GroupViability.isVFIODriver) == true }
            .flatMap { device in device.bars.filter { $0.kind == .memory && !$0.unassigned }.map { (device.address, $0) } }
            .max { $0.1.size < $1.1.size }
        if let release = host.kernelRelease, let version = KernelVersion(release: release) {
            findings += KernelHistory.missing(.linux, version).map { fact in
                Finding(id: "version.\(fact.id)", status: .info, title: "Linux \(version.major).\(version.minor) lacks: \(fact.gives)",
                        evidence: ["kernel \(release) < \(fact.version.major).\(fact.version.minor): \(fact.withoutIt)", "source: \(fact.source)"],
                        remedy: "Linux \(fact.version.major).\(fact.version.minor) or later")
            }
        }
        guard let text = host.qemuVersion, let version = KernelVersion(release: text) else { return findings }
        for fact in KernelHistory.missing(.qemu, version) {
            var evidence = ["QEMU \(text) < \(fact.version.major).\(fact.version.minor): \(fact.withoutIt)", "source: \(fact.source)"]
            if fact.id == "qemu.bar-mmap-alignment", let (address, bar) = largest {
                // Misaligned: every 4 KiB page is its own entry; aligned: the fewest the planner finds.
                let misaligned = bar.size / PageGeometry.pageSize
                let aligned = Placement.minimumMappings(physicalStart: bar.start, length: bar.size).values.reduce(0, +)
                evidence.insert("QEMU \(text) maps BARs misaligned: expect \(misaligned) page-table entries instead of \(aligned) for \(address) BAR \(bar.index) (\(byteCount(bar.size)))", at: 0)
            }
            findings.append(Finding(id: "version.\(fact.id)", status: .info, title: "QEMU \(text) lacks: \(fact.gives)",
                                    evidence: evidence, remedy: "QEMU \(fact.version.major).\(fact.version.minor) or later"))
        }
        return findings
    }
}

extension HostReadinessReader {
    /// The version `qemu-system-x86_64 --version` prints ("QEMU emulator version 7.2.22 (...)"),
    /// from the first such program on PATH, given 5 seconds; nil when there is none.
    static func qemuVersion(path: String = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin") -> String? {
        guard let program = path.split(separator: ":").map({ "\($0)/qemu-system-x86_64" })
            .first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else { return nil }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = ["--version"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return nil }
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        if process.isRunning { process.terminate(); return nil }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        return parseQEMUVersion(String(decoding: data.prefix(4096), as: UTF8.self))
    }

    /// "7.2.22" from "QEMU emulator version 7.2.22 (Debian ...)"; nil when the line is not there. Pure.
    static func parseQEMUVersion(_ text: String) -> String? {
        let marker = "QEMU emulator version "
        guard let range = text.range(of: marker) else { return nil }
        let version = text[range.upperBound...].prefix { $0.isNumber || $0 == "." }
        return KernelVersion(release: String(version)) == nil ? nil : String(version)
    }
}
