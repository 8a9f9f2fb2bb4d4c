import GuestMMIOWindow
import PCIInventory
import TextFormat

extension Doctor {
    /// The guest's 64-bit MMIO window for the devices on vfio-pci, as one VM with the planned RAM
    /// would get them (`doctor --vm-memory`). None when no such device has a 64-bit prefetchable BAR.
    static func mmioWindow(_ host: HostReadiness) -> [Finding] {
        let assigned = host.inventory.devices.filter { $0.driver.map(GroupViability.isVFIODriver) == true }
        return mmioWindow(devices: assigned, guestMemory: host.plannedGuestMemory, hostAddressBits: host.physicalAddressBits)
    }

    /// The window finding for these devices in one VM: the rule is `MMIOWindowRule`'s; this says
    /// it as a finding, with each VMM's fix. `vm config` shows the same for its selection.
    public static func mmioWindow(devices: [PCIDevice], guestMemory: UInt64, hostAddressBits: Int?) -> [Finding] {
        let bars = windowBARs(devices)
        guard let plan = mmioWindowPlan(devices: devices, guestMemory: guestMemory, hostAddressBits: hostAddressBits) else { return [] }
        let barText = bars.map { "\($0.0) BAR \($0.1.index): \(byteCount($0.1.size))" }.joined(separator: ", ")
        var evidence = ["64-bit prefetchable BARs: \(barText); naturally aligned, largest first they span "
                        + (plan.span.map(bytes) ?? "more than 2^64 bytes")]
        evidence += plan.verdicts.map { "\($0.firmware.name): \($0.explanation) [\($0.firmware.source)]" }
        let hostBits = hostAddressBits.map { "the host has \($0) physical address bits" } ?? "the host's physical address bits are unknown (no \"address sizes\" in /proc/cpuinfo)"
        evidence.append("the window's end needs \(plan.guestAddressBits) guest physical address bits with \(bytes(guestMemory)) of RAM; \(hostBits)")

        let id = "vm.mmio-window"
        if plan.someGuestHolds == false {
            return [Finding(id: id, status: .problem, title: "No guest on this host can hold these BARs",
                            evidence: evidence,
                            remedy: "even with the least RAM the BARs need \(plan.minimumGuestAddressBits) address bits, more than the host's \(hostAddressBits.map(String.init) ?? "?"): give the VM fewer devices, or smaller BARs (`vfioctl rebar` where the device allows)")]
        }
        if plan.windowMiB == nil {
            return [Finding(id: id, status: .problem, title: "No OVMF guest can hold these BARs",
                            evidence: evidence,
                            remedy: "the window they need is larger than OVMF accepts (X-PciMmio64Mb up to 16 TiB): give the VM fewer devices, or smaller BARs")]
        }
        if plan.hostHolds == false {
            return [Finding(id: id, status: .problem, title: "\(bytes(guestMemory)) of guest RAM pushes the 64-bit window past the host's address bits",
                            evidence: evidence,
                            remedy: "give the VM less RAM: with the least RAM the window needs \(plan.minimumGuestAddressBits) bits")]
        }
        guard plan.needsSettings || plan.needsAddressBits else {
            return [Finding(id: id, status: .ok, title: "The firmware's default 64-bit MMIO window holds the BARs", evidence: evidence)]
        }
        var remedy = ["QEMU: " + plan.qemuArguments.joined(separator: " ")
                      + (plan.needsAddressBits ? " (or host-phys-bits=on on -cpu)" : "")]
        remedy.append("libvirt: " + plan.libvirtElements.split(separator: "\n").map { $0.trimmingCharacters() }.joined())
        remedy.append("Cloud Hypervisor: " + (plan.cloudHypervisorArguments.isEmpty
            ? "nothing (its window runs to the top of the guest's address space)"
            : plan.cloudHypervisorArguments.joined(separator: " ")))
        if plan.guestAddressBits > MMIOWindowRule.ovmfMaximumPhysBits {
            remedy.append("OVMF uses at most \(MMIOWindowRule.ovmfMaximumPhysBits) address bits: boot with SeaBIOS or give the VM less RAM")
        }
        return [Finding(id: id, status: .warning,
                        title: "The firmware's default 64-bit MMIO window cannot hold the BARs: set the window"
                            + (plan.needsAddressBits ? " and the guest's address bits" : ""),
                        evidence: evidence, remedy: remedy.joined(separator: "; "))]
    }
}

extension Doctor {
    /// The BARs the guest firmware places in its 64-bit window: 64-bit prefetchable memory BARs.
    static func windowBARs(_ devices: [PCIDevice]) -> [(PCIAddress, PCIBAR)] {
        devices.flatMap { device in
            device.bars.filter { $0.kind == .memory && $0.is64Bit && $0.prefetchable }.map { (device.address, $0) }
        }
    }

    /// `MMIOWindowRule`'s plan for these devices in one VM; nil when they have no 64-bit
    /// prefetchable BAR. `vm config` renders its settings.
    public static func mmioWindowPlan(devices: [PCIDevice], guestMemory: UInt64, hostAddressBits: Int?) -> MMIOWindowPlan? {
        let bars = windowBARs(devices)
        guard !bars.isEmpty else { return nil }
        return MMIOWindowRule.plan(MMIOWindowRequest(barSizes: bars.map(\.1.size), guestMemory: guestMemory,
                                                     hostPhysicalAddressBits: hostAddressBits))
    }
}

extension HostReadinessReader {
    /// The "address sizes" line of procRoot/cpuinfo.
    func readPhysicalAddressBits() -> Int? {
        guard let bytes = reader.readBytes(procRoot + "/cpuinfo", limit: 1 << 16) else { return nil }
        return Self.physicalAddressBits(cpuinfo: String(decoding: bytes, as: UTF8.self))
    }

    /// The physical bits of the first "address sizes : 39 bits physical, 48 bits virtual" line;
    /// nil when absent or not 1-64. Pure.
    static func physicalAddressBits(cpuinfo text: String) -> Int? {
        for line in text.split(separator: "\n") where line.hasPrefix("address sizes") {
            guard let colon = line.firstIndex(of: ":") else { return nil }
            let words = line[line.index(after: colon)...].split(separator: " ")
            guard words.count >= 3, words[1] == "bits", words[2].hasPrefix("physical"),
                  let bits = Int(words[0]), (1...64).contains(bits) else { return nil }
            return bits
        }
        return nil
    }
}

extension Substring {
    fileprivate func trimmingCharacters() -> String {
        String(drop { $0 == " " })
    }
}
