/// Faults and delays for crash, rollback and concurrency tests, passed in through the API (as
/// `SysfsWriting` is): the library never reads them from the environment, so the shipping
/// vfioctl has none. Unit tests build them directly; the lab's `vfioctl-lab-probe
/// with-test-hooks` builds them from its environment (`init(environment:)`) and runs the real
/// commands with them.
public struct BindingTestHooks: Sendable, Equatable {
    /// SIGKILL the process right after this bind step (one of `Binder.steps`).
    public var faultStep: String?
    /// Milliseconds to sleep after every step (at most 60 000), to widen the window in which two
    /// unlocked runs would interleave.
    public var stepDelayMilliseconds: UInt32 = 0
    /// The journal's append that fails as a full file system would (ENOSPC), counted from 1;
    /// with `journalFailsOnwards` that one and every later one.
    public var journalFailingAppend: Int?
    /// With `journalFailingAppend`: every later append fails too.
    public var journalFailsOnwards = false
    /// A file the binding lock appends "pid event monotonic-ns" lines to, so a test can prove two
    /// runs never held the lock at once.
    public var lockTracePath: String?

    /// No hooks: what vfioctl itself runs with.
    public static let none = BindingTestHooks()

    /// No hooks.
    public init() {}

    /// The variables that name each hook, for the lab probe and the tests.
    public static let variables = ["VFIOCTL_FAULT_INJECT", "VFIOCTL_STEP_DELAY_MS", "VFIOCTL_JOURNAL_FAIL", "VFIOCTL_LOCK_TRACE"]

    /// Hooks from test variables: `VFIOCTL_FAULT_INJECT=STEP`, `VFIOCTL_STEP_DELAY_MS=N`,
    /// `VFIOCTL_JOURNAL_FAIL=N` or `N+`, `VFIOCTL_LOCK_TRACE=FILE`. Only test tools call this.
    public init(environment: [String: String]) {
        faultStep = environment["VFIOCTL_FAULT_INJECT"].flatMap { $0.isEmpty ? nil : $0 }
        stepDelayMilliseconds = environment["VFIOCTL_STEP_DELAY_MS"].flatMap { UInt32($0) }.map { min($0, 60_000) } ?? 0
        if var spec = environment["VFIOCTL_JOURNAL_FAIL"], !spec.isEmpty {
            journalFailsOnwards = spec.hasSuffix("+")
            if journalFailsOnwards { spec.removeLast() }
            journalFailingAppend = Int(spec).flatMap { $0 > 0 ? $0 : nil }
        }
        lockTracePath = environment["VFIOCTL_LOCK_TRACE"].flatMap { $0.isEmpty ? nil : $0 }
    }
}
