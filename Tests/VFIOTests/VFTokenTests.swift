import Testing
@testable import VFIO

@Suite struct VFTokenTests {
    @Test func parsesAndPrintsTheKernelsForm() throws {
        let token = try #require(VFToken("2AB74924-c335-45f4-9b16-8569e5b08258"))
        #expect(token.bytes.count == 16 && token.bytes[0] == 0x2a && token.bytes[15] == 0x58)
        #expect(token.description == "2ab74924-c335-45f4-9b16-8569e5b08258")
        for bad in ["", "2ab74924c33545f49b168569e5b08258", "2ab74924-c335-45f4-9b16-8569e5b0825", "2ab74924-c335-45f4-9b16-8569e5b0825g",
                    "2ab74924-c335-45f4-9b16-8569e5b08258-", "2ab7492-4c335-45f4-9b16-8569e5b08258"] {
            #expect(VFToken(bad) == nil, "\(bad)")
        }
    }

    @Test func randomTokensAreVersion4AndDiffer() throws {
        let a = VFToken.random(), b = VFToken.random()
        #expect(a != b)
        #expect(a.bytes[6] >> 4 == 4 && a.bytes[8] >> 6 == 2)
        #expect(VFToken(a.description) == a)
    }
}
