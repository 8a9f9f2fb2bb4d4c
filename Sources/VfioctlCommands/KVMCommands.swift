import ArgumentParser
import Foundation
import KVM
import TextFormat

/// `vfioctl kvm ...`: the host's KVM.
public struct KVMCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "kvm",
        abstract: "Inspect this host's KVM.",
        discussion: """
            Examples:
              vfioctl kvm info
              vfioctl kvm info --json
            """,
        subcommands: [KVMInfoCommand.self]
    )
    @OptionGroup var global: GlobalOptions
    public init() {}
}

/// `vfioctl kvm info`: what KVM offers on this host, asked of /dev/kvm and of a scratch VM.
struct KVMInfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show KVM's API version and capabilities on this host.",
        discussion: """
            Opens /dev/kvm and creates a VM (with no memory and no vCPU) to ask for the \
            per-VM capabilities: memslots, dirty ring, manual dirty-log protect.

            Example:
              vfioctl kvm info
              vfioctl kvm info --json | jq .dirty_ring_max_bytes
            """
    )
    @OptionGroup var global: GlobalOptions

    func run() throws {
        let info: KVMInfo
        // KVMError's description says what to do when /dev/kvm is missing or not accessible.
        do throws(KVMError) {
            info = try KVMInfo.probe()
        } catch {
            throw CommandFailure(error.description)
        }
        if global.json {
            print(try JSONOutput.encode(info))
        } else {
            for (label, value) in info.lines { print(label.padding(toLength: 26, withPad: " ", startingAt: 0) + value) }
        }
    }
}

/// `kvm info` output; JSON keys are snake_case.
struct KVMInfo: Encodable {
    let device: String
    let api_version: Int32
    let vcpu_mmap_size: Int
    let max_memslots: Int
    let address_spaces: Int
    let readonly_memory: Bool
    let dirty_ring_max_bytes: Int
    let dirty_ring_acq_rel_max_bytes: Int
    let manual_dirty_log_protect: Int
    let recommended_vcpus: Int
    let max_vcpus: Int
    let max_vcpu_id: Int
    let sync_mmu: Bool

    static func probe() throws(KVMError) -> KVMInfo {
        let system = try KVMSystem()
        let caps = try system.createVM().capabilities
        return KVMInfo(
            device: system.path, api_version: system.apiVersion, vcpu_mmap_size: system.vcpuMmapSize,
            max_memslots: caps.maxMemslots, address_spaces: caps.addressSpaces,
            readonly_memory: caps.readOnlyMemory, dirty_ring_max_bytes: caps.dirtyRingMaxBytes,
            dirty_ring_acq_rel_max_bytes: caps.dirtyRingAcquireReleaseMaxBytes,
            manual_dirty_log_protect: caps.manualDirtyLogProtect, recommended_vcpus: caps.recommendedVCPUs,
            max_vcpus: caps.maxVCPUs, max_vcpu_id: caps.maxVCPUID, sync_mmu: try system.capability(.syncMMU) > 0)
    }

    var lines: [(String, String)] {
        func yesNo(_ value: Bool) -> String { value ? "yes" : "no" }
        func protect(_ flags: Int) -> String {
            guard flags != 0 else { return "no" }
            return "yes (flags \(flags.hex()))"
        }
        return [
            ("Device", device),
            ("API version", "\(api_version)"),
            ("vCPU mmap size", "\(vcpu_mmap_size) bytes"),
            ("Max memslots", "\(max_memslots) per address space"),
            ("Address spaces", "\(address_spaces)"),
            ("Read-only memory", yesNo(readonly_memory)),
            ("Dirty ring", dirty_ring_max_bytes > 0 ? "yes, up to \(dirty_ring_max_bytes) bytes" : "no"),
            ("Dirty ring (acq/rel)", dirty_ring_acq_rel_max_bytes > 0 ? "yes, up to \(dirty_ring_acq_rel_max_bytes) bytes" : "no"),
            ("Manual dirty-log protect", protect(manual_dirty_log_protect)),
            ("vCPUs", "\(recommended_vcpus) recommended, \(max_vcpus) max, ids < \(max_vcpu_id)"),
            ("Sync MMU", yesNo(sync_mmu)),
        ]
    }
}
