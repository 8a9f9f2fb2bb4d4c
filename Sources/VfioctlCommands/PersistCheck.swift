import ArgumentParser
import PCIBinding
import PCIInventory

extension PersistCommand {
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Say whether the next boot will bind a device to vfio-pci, and what could take it first.",
            discussion: """
                Looks at the vfioctl udev rule, vfio-pci ids= (modprobe.d and the kernel command \
                line, which take every device of the same model), driverctl overrides and other \
                udev rules that set driver_override, the native driver (built in or a module, \
                blacklisted, ordered after vfio-pci by a softdep), and the early binding \
                (`persist add --early`): its files intact and the initramfs rebuilt after them. \
                Conflicts are named with their file and line.

                Every run also judges the device by `bind`'s safety rules (a bridge, the disk of a \
                mounted filesystem, the boot display...): a boot that binds one of those is a problem.

                Exit status: 0 it will be bound, 2 it will not, 3 it will be bound but `bind` would \
                refuse it (undo with `vfioctl persist remove`).

                Example:
                  vfioctl persist check 01:00.0
                """
        )
        @OptionGroup var global: GlobalOptions
        @OptionGroup var rules: RulesOptions
        @OptionGroup var options: BindingOptions
        @Option(name: .long, help: ArgumentHelp("A modprobe.d directory to read (repeatable; default: the system's).", valueName: "dir"))
        var modprobeDir: [String] = []
        @Argument(help: ArgumentHelp("The device.", valueName: "address")) var address: PCIAddress

        func run() throws {
            let target = address
            let inventory = try InventoryLoader.load(global, detail: .full)
            let device = try InventoryLoader.device(target, in: inventory)
            var reader = BootFactsReader(sysfs: global.resolvedRoot)
            reader.procRoot = options.procRoot
            reader.rulesDirectory = rules.rulesDir
            reader.configRoot = rules.configRoot
            reader.journal = options.journal
            if !modprobeDir.isEmpty { reader.modprobeDirectories = modprobeDir }
            reader.hostFacts = HostFactsReader(sysfs: global.resolvedRoot, procRoot: options.procRoot).read()
            var facts = reader.read(device, inventory: inventory)
            // driverctl and udev rules besides vfioctl's (ids= is in the facts already).
            let plan = BootBindingLoader.plan(configRoot: rules.configRoot, procRoot: options.procRoot, rulesDirectory: rules.rulesDir, inventory: inventory)
            facts.otherBindings = plan.othersBinding(target).filter { !$0.mechanism.matchesByModel }
            let judged = BootCheck.judge(facts)
            let willBind = judged.willBind
            let findings = judged.findings + plan.findings(about: target).map(BootFinding.init)
            let early = willBind && BootCheck.bindsEarly(facts)
            if global.json {
                print(try JSONOutput.encode(CheckJSON(address: target.description, willBind: willBind, early: early, findings: findings)))
            } else {
                print("\(target): " + (!willBind ? "the next boot does not bind it to vfio-pci"
                    : early ? "the next boot binds it to vfio-pci from the initramfs, before its native driver"
                    : "the next boot binds it to vfio-pci"))
                for finding in findings { print("  \(finding)") }
            }
            if !willBind { throw ExitCode(2) }
            if BootCheck.bindsUnsafely(facts) { throw ExitCode(BindingExit.refused) }
        }
    }

    struct CheckJSON: Encodable {
        let address: String
        let willBind: Bool
        let early: Bool
        let findings: [BootFinding]
        enum Keys: String, CodingKey { case address, will_bind, early, findings }
        enum FindingKeys: String, CodingKey { case status, text }
        func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode(address, forKey: .address)
            try container.encode(willBind, forKey: .will_bind)
            try container.encode(early, forKey: .early)
            var list = container.nestedUnkeyedContainer(forKey: .findings)
            for finding in findings {
                var item = list.nestedContainer(keyedBy: FindingKeys.self)
                try item.encode(finding.status.rawValue, forKey: .status)
                try item.encode(finding.text, forKey: .text)
            }
        }
    }
}
