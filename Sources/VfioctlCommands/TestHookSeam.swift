import PCIBinding

/// The seam through which a test tool runs the real commands with faults injected. vfioctl
/// itself never sets it (its hooks stay `.none`); `vfioctl-lab-probe with-test-hooks` sets it
/// from its environment before running a command, so the lab's crash and concurrency scenarios
/// drive the same code without the shipping binary reading any test variable.
package enum TestHookSeam {
    /// Hooks given to every journal, binder and lock the binding commands create.
    nonisolated(unsafe) package static var binding = BindingTestHooks.none
}
