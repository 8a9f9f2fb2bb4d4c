import ArgumentParser
import Foundation
import PCIBinding
import VfioctlCommands

/// `vfioctl-lab-probe with-test-hooks ARGS...`: runs `vfioctl ARGS...` (the same commands, in
/// this process) with the binding test hooks taken from the environment. The shipping vfioctl
/// reads none of these variables; the lab's crash, rollback and concurrency scenarios use this.
struct WithTestHooksCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "with-test-hooks",
        abstract: "Run a vfioctl command with test hooks from the environment: VFIOCTL_FAULT_INJECT=STEP, VFIOCTL_STEP_DELAY_MS=N, VFIOCTL_JOURNAL_FAIL=N[+], VFIOCTL_LOCK_TRACE=FILE.",
        discussion: "Example:\n  VFIOCTL_FAULT_INJECT=unbound vfioctl-lab-probe with-test-hooks bind 0000:00:03.0"
    )
    @Argument(parsing: .captureForPassthrough, help: "The vfioctl command and its arguments.")
    var arguments: [String] = []

    func run() throws {
        TestHookSeam.binding = BindingTestHooks(environment: ProcessInfo.processInfo.environment)
        VfioctlCLI.main(arguments)
    }
}
