import PCIInventory
import Testing
@testable import VFIO

@Suite struct ResetMethodTests {
    let address = try! PCIAddress(parsing: "0000:00:05.0")

    @Test func withoutARequestTheKernelsFirstMethod() throws {
        #expect(try ResetMethod.choose(requested: nil, offered: ["flr", "bus"], address: address) == .flr)
        #expect(try ResetMethod.choose(requested: nil, offered: ["pm"], address: address) == .pm)
        // A name this version does not know is skipped, not guessed at.
        #expect(try ResetMethod.choose(requested: nil, offered: ["future_reset", "bus"], address: address) == .bus)
    }

    @Test func aRequestedMethodMustBeOffered() throws {
        #expect(try ResetMethod.choose(requested: .bus, offered: ["flr", "bus"], address: address) == .bus)
        #expect(throws: VFIOError.self) { try ResetMethod.choose(requested: .flr, offered: ["pm"], address: address) }
        do {
            _ = try ResetMethod.choose(requested: .flr, offered: ["pm"], address: address)
        } catch {
            #expect(error.description.contains("offers no flr reset (its reset_method: pm)"))
        }
        // hot needs no method of the device's own: it resets the slot or bus.
        #expect(try ResetMethod.choose(requested: .hot, offered: [], address: address) == .hot)
        // "hot" in the sysfs list (it never is) does not make it a function method.
        #expect(throws: VFIOError.self) { try ResetMethod.choose(requested: nil, offered: ["hot"], address: address) }
    }

    @Test func noMethodAtAllPointsAtHotReset() {
        do {
            _ = try ResetMethod.choose(requested: nil, offered: [], address: address)
            Issue.record("an empty reset_method chose a method")
        } catch {
            #expect(error.description.contains("--method hot"))
        }
    }
}
