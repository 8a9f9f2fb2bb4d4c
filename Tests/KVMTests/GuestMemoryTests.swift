import PageAlignment
import Testing
@testable import KVM

@Suite struct GuestMemoryTests {
    /// The size is rounded up to whole pages; one that cannot be is refused, not a trap.
    @Test func sizesRoundUpToWholePagesWithoutOverflow() throws {
        let memory = try GuestMemory(size: 1)
        #expect(memory.mapping.length == Int(BasePage.size))
        for size in [Int.max, Int.max - Int(BasePage.size) + 2] {
            #expect(throws: KVMError.self) { try GuestMemory(size: size) }
        }
        #expect(throws: KVMError.self) { try GuestMemory(size: 0) }
    }
}
