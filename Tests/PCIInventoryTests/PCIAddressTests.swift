import Testing
@testable import PCIInventory

@Suite struct PCIAddressTests {
    @Test func parsesLongAndShortForms() throws {
        let long = try PCIAddress(parsing: "0000:01:00.0")
        #expect(long.domain == 0 && long.bus == 1 && long.device == 0 && long.function == 0)
        let short = try PCIAddress(parsing: "3b:1f.7")
        #expect(short.description == "0000:3b:1f.7")
        #expect(try PCIAddress(parsing: "0000:3B:1F.7") == short)
        #expect(try PCIAddress(parsing: "  0001:ff:00.1\n").description == "0001:ff:00.1")
        // Intel VMD domains are wider than four digits.
        #expect(try PCIAddress(parsing: "10000:e1:00.0").description == "10000:e1:00.0")
    }

    @Test func everyBusDeviceFunctionRoundTrips() throws {
        for bus in 0...255 {
            for device in 0...31 {
                for function in 0...7 {
                    let address = try PCIAddress(bus: UInt8(bus), device: UInt8(device), function: UInt8(function))
                    let text = address.description
                    #expect(text.count == 12)
                    #expect(text == text.lowercased())
                    let reparsed = try PCIAddress(parsing: text)
                    if reparsed != address { Issue.record("\(text) reparsed as \(reparsed)") }
                    let shortForm = String(text.dropFirst(5))
                    if try PCIAddress(parsing: shortForm) != address { Issue.record("short \(shortForm)") }
                }
            }
        }
    }

    @Test(arguments: [
        ("01:00", "DD.F"),
        ("zz:00.0", "bus \"zz\""),
        ("0000:01:20.0", "device 20 is out of range 00-1f"),
        ("0000:01:00.8", "function 8 is out of range 0-7"),
        ("", "not of the form"),
        ("0000:01:00.0.1", "DD.F"),
        ("000g:01:00.0", "domain"),
        ("0000:001:00.0", "bus"),
        ("0000:01:0x0.0", "device"),
        ("1:2:3:4.0", "not of the form"),
        ("0000:01:00.", "function"),
        ("-1:00.0", "bus"),
    ])
    func rejectsBadInputNamingTheExpectedForm(input: String, problem: String) {
        do {
            let parsed = try PCIAddress(parsing: input)
            Issue.record("\"\(input)\" parsed as \(parsed)")
        } catch {
            #expect(error.description.contains(problem), "\(error.description)")
            #expect(error.description.contains("expected DDDD:BB:DD.F or BB:DD.F"))
            #expect(!error.description.contains("\n"))
        }
    }

    @Test func canonicalFastPathAgreesWithTheGeneralParser() throws {
        for bus in stride(from: 0, through: 255, by: 7) {
            for device in 0...31 {
                for function in 0...7 {
                    let address = try PCIAddress(bus: UInt8(bus), device: UInt8(device), function: UInt8(function))
                    #expect(PCIAddress(canonical: address.description.utf8) == address)
                }
            }
        }
        for text in ["0000:01:20.0", "0000:01:00.8", "0000:1:00.0", "0000:01:00-0", "00000:01:00.0", "zzzz:01:00.0", "0000:01:00.0 "] {
            #expect(PCIAddress(canonical: text.utf8) == nil, "\(text)")
        }
        #expect(PCIAddress(canonical: "0001:FF:1F.7".utf8) == (try PCIAddress(parsing: "0001:ff:1f.7")))
    }

    @Test func ordersByDomainBusDeviceFunction() throws {
        let addresses = try ["0001:00:00.0", "0000:02:00.0", "0000:01:01.0", "0000:01:00.7", "0000:01:00.1"]
            .map { try PCIAddress(parsing: $0) }
        #expect(addresses.sorted().map(\.description) ==
                ["0000:01:00.1", "0000:01:00.7", "0000:01:01.0", "0000:02:00.0", "0001:00:00.0"])
    }
}
