import KVM
import TestKit
import PageAlignment
import Testing
@testable import Passthrough

/// The planner at a small scale: 4 KiB base pages and "huge" pages of 16 KiB and 64 KiB, so
/// every case of a few dozen pages can be enumerated and checked against brute force.
@Suite("Guest placement of BARs")
struct GuestPlacementTests {
    static let page: UInt64 = 4096
    static let hugeSizes: [UInt64] = [4 * 4096, 16 * 4096]

    /// The lowest page-aligned base in the window, clear of `taken`, that puts every area at a
    /// gpa congruent to its host address modulo the huge page it needs: by trying every page.
    static func bruteForceBase(_ request: BARRequest, window: Range<UInt64>, taken: [Range<UInt64>]) -> UInt64? {
        let span = (request.regionSize + page - 1) / page * page
        var base = (window.lowerBound + page - 1) / page * page
        while base + span <= window.upperBound {
            let clear = !taken.contains { $0.overlaps(base..<(base + span)) }
            let congruent = request.areas.allSatisfy { area in
                let huge = HugePages.requiredCongruence(hostAddress: area.hostAddress, size: area.size, pageSizes: hugeSizes) ?? page
                return HugePages.isCongruent(base + area.offset, area.hostAddress, modulo: huge)
            }
            if clear && congruent { return base }
            base += page
        }
        return nil
    }

    static func place(_ requests: [BARRequest], window: Range<UInt64>, reserved: [Range<UInt64>] = []) throws(PassthroughError) -> [PlacedBar] {
        try GuestPlacement.place(requests, in: window, reserved: reserved, pageSizes: hugeSizes, basePageSize: page)
    }

    /// The same as a Result, so loops can switch on the outcome.
    static func attempt(_ requests: [BARRequest], window: Range<UInt64>, reserved: [Range<UInt64>] = []) -> Result<[PlacedBar], PassthroughError> {
        Result { () throws(PassthroughError) in try place(requests, window: window, reserved: reserved) }
    }

    /// One BAR with one area: every host address (pages 0..<40), size (1...20 pages), area offset
    /// (0 or 2 pages into a region with a tail page) and window start (pages 0..<12) gives the
    /// brute-force answer, or fails exactly when brute force finds nothing.
    @Test func singleAreaMatchesBruteForce() throws {
        var checked = 0, noRoom = 0
        for hostPage in UInt64(0)..<40 {
            for sizePages in UInt64(1)...20 {
                for offsetPages in [UInt64(0), 2] {
                    for startPage in UInt64(0)..<12 {
                        let request = BARRequest(bar: 2, regionIndex: 2, regionSize: (offsetPages + sizePages + 1) * Self.page,
                                                 areas: [HostArea(offset: offsetPages * Self.page, size: sizePages * Self.page,
                                                                  hostAddress: 0x7f00_0000_0000 + hostPage * Self.page)])
                        let window = (startPage * Self.page)..<(40 * Self.page)
                        let expected = Self.bruteForceBase(request, window: window, taken: [])
                        switch Self.attempt([request], window: window) {
                        case let .success(placed):
                            #expect(placed.count == 1)
                            #expect(placed.first?.guestPhysicalAddress == expected, "host page \(hostPage), \(sizePages) pages at +\(offsetPages), window from page \(startPage)")
                            if let area = placed.first?.areas.first {
                                #expect(area.guestPhysicalAddress == (expected ?? 0) + request.areas[0].offset)
                                if let huge = area.hugePageCongruence {
                                    #expect(HugePages.isCongruent(area.guestPhysicalAddress, area.hostAddress, modulo: huge))
                                }
                            }
                        case .failure(.noRoom):
                            #expect(expected == nil, "noRoom, but base \(expected.map { String($0, radix: 16) } ?? "-") works")
                            noRoom += 1
                        case let .failure(error):
                            Issue.record("unexpected \(error)")
                        }
                        checked += 1
                    }
                }
            }
        }
        #expect(checked == 40 * 20 * 2 * 12)
        #expect(noRoom > 0, "some cases must run out of room, or the window is too generous to test that")
    }

    /// Two BARs and a reserved range: every pair of host addresses and sizes. Each result lies in
    /// the window, clear of the reserved range and of the other BAR, congruent; and the BAR placed
    /// first (per `order`) is at the brute-force lowest, the second at the lowest given the first.
    @Test func twoBarsAreGreedyInOrderAndDisjoint() throws {
        let window = (4 * Self.page)..<(96 * Self.page)
        let reserved = [(8 * Self.page)..<(10 * Self.page)]
        var placedPairs = 0
        for hostA in UInt64(0)..<16 {
            for sizeA in UInt64(1)...17 {
                for hostB in stride(from: UInt64(0), to: 16, by: 3) {
                    for sizeB in stride(from: UInt64(1), through: 17, by: 4) {
                        let a = BARRequest(bar: 0, regionIndex: 0, regionSize: sizeA * Self.page,
                                           areas: [HostArea(offset: 0, size: sizeA * Self.page, hostAddress: (0x100 + hostA) * Self.page)])
                        let b = BARRequest(bar: 2, regionIndex: 2, regionSize: sizeB * Self.page,
                                           areas: [HostArea(offset: 0, size: sizeB * Self.page, hostAddress: (0x200 + hostB) * Self.page)])
                        let ordered = try GuestPlacement.order([a, b], pageSizes: Self.hugeSizes, basePageSize: Self.page)
                        guard let firstBase = Self.bruteForceBase(ordered[0], window: window, taken: reserved) else {
                            Issue.record("no room for the first BAR")
                            continue
                        }
                        let span0 = ordered[0].regionSize
                        let secondBase = Self.bruteForceBase(ordered[1], window: window, taken: reserved + [firstBase..<(firstBase + span0)])
                        switch Self.attempt([b, a], window: window, reserved: reserved) {
                        case let .success(placed):
                            #expect(placed.map(\.bar) == [0, 2], "results come in BAR order")
                            let byBar = Dictionary(uniqueKeysWithValues: placed.map { ($0.bar, $0) })
                            #expect(byBar[ordered[0].bar]?.guestPhysicalAddress == firstBase)
                            #expect(byBar[ordered[1].bar]?.guestPhysicalAddress == secondBase)
                            #expect(!placed[0].guestRange.overlaps(placed[1].guestRange))
                            for bar in placed {
                                #expect(bar.guestRange.lowerBound >= window.lowerBound && bar.guestRange.upperBound <= window.upperBound)
                                #expect(!bar.guestRange.overlaps(reserved[0]))
                                for area in bar.areas {
                                    let huge = area.hugePageCongruence ?? Self.page
                                    #expect(HugePages.isCongruent(area.guestPhysicalAddress, area.hostAddress, modulo: huge))
                                }
                            }
                            placedPairs += 1
                        case .failure(.noRoom):
                            #expect(secondBase == nil)
                        case let .failure(error):
                            Issue.record("unexpected \(error)")
                        }
                    }
                }
            }
        }
        #expect(placedPairs > 1000)
    }

    /// Most constrained first: larger congruence, then larger region, then lower BAR number.
    @Test func orderIsMostConstrainedFirst() throws {
        func request(_ bar: Int, pages: UInt64, hostPage: UInt64) -> BARRequest {
            BARRequest(bar: bar, regionIndex: UInt32(bar), regionSize: pages * Self.page,
                       areas: [HostArea(offset: 0, size: pages * Self.page, hostAddress: hostPage * Self.page)])
        }
        let small = request(0, pages: 2, hostPage: 0)        // no huge page fits: modulus 4 KiB
        let mid = request(1, pages: 4, hostPage: 0)          // 16 KiB
        let midBigger = request(2, pages: 8, hostPage: 1)    // 16 KiB fits, 64 KiB does not
        let big = request(3, pages: 16, hostPage: 0)         // 64 KiB
        let sameAsSmall = request(4, pages: 2, hostPage: 5)
        let ordered = try GuestPlacement.order([small, mid, midBigger, big, sameAsSmall], pageSizes: Self.hugeSizes, basePageSize: Self.page)
        #expect(ordered.map(\.bar) == [3, 2, 1, 0, 4])
    }

    @Test func areasOfOneBARMustAgree() throws {
        // Both areas hold a 16 KiB page; the second sits 9 pages into the BAR, so the base it
        // wants is 3 pages off a 16 KiB boundary, while the first wants one on it.
        let clash = BARRequest(bar: 1, regionIndex: 1, regionSize: 13 * Self.page, areas: [
            HostArea(offset: 0, size: 4 * Self.page, hostAddress: 0x100 * Self.page),
            HostArea(offset: 9 * Self.page, size: 4 * Self.page, hostAddress: 0x204 * Self.page),
        ])
        #expect(throws: PassthroughError.incongruentAreas(bar: 1)) { try Self.place([clash], window: 0..<(1 << 30)) }
        // 8 pages in, the same mapping agrees with the first: one base serves both.
        var agreeing = clash
        agreeing.areas[1].offset = 8 * Self.page
        let placed = try Self.place([agreeing], window: (1 * Self.page)..<(1 << 30))
        #expect(placed[0].guestPhysicalAddress == 4 * Self.page)
        for area in placed[0].areas {
            #expect(area.hugePageCongruence == 4 * Self.page)
            #expect(HugePages.isCongruent(area.guestPhysicalAddress, area.hostAddress, modulo: 4 * Self.page))
        }
        // A sparse BAR: the gap between the areas is part of the guest range.
        #expect(placed[0].guestRange.count == Int(13 * Self.page))
    }

    @Test func badRequestsAreRefusedWithTheBar() throws {
        let window: Range<UInt64> = 0..<(1 << 30)
        func refusal(_ request: BARRequest) -> PassthroughError? {
            do { _ = try Self.place([request], window: window); return nil } catch { return error }
        }
        let overlapping = BARRequest(bar: 3, regionIndex: 3, regionSize: 8 * Self.page, areas: [
            HostArea(offset: 0, size: 4 * Self.page, hostAddress: 0), HostArea(offset: 2 * Self.page, size: 2 * Self.page, hostAddress: 0x10_0000)])
        let outside = BARRequest(bar: 3, regionIndex: 3, regionSize: 2 * Self.page, areas: [HostArea(offset: Self.page, size: 2 * Self.page, hostAddress: 0)])
        let misaligned = BARRequest(bar: 3, regionIndex: 3, regionSize: 2 * Self.page, areas: [HostArea(offset: 0, size: 0x800, hostAddress: 0)])
        let empty = BARRequest(bar: 3, regionIndex: 3, regionSize: 0, areas: [])
        for request in [overlapping, outside, misaligned, empty] {
            guard case .invalidBar(bar: 3, _)? = refusal(request) else {
                Issue.record("\(request) was not refused as an invalid BAR 3: \(String(describing: refusal(request)))")
                continue
            }
        }
        let twice = BARRequest(bar: 0, regionIndex: 0, regionSize: Self.page, areas: [])
        #expect(throws: PassthroughError.invalidBar(bar: 0, reason: "requested twice")) { try Self.place([twice, twice], window: window) }
        let huge = BARRequest(bar: 5, regionIndex: 5, regionSize: 1 << 31, areas: [])
        #expect(throws: PassthroughError.noRoom(bar: 5, size: 1 << 31, window: window)) { try Self.place([huge], window: window) }
    }

    /// A sub-page region (256 bytes) still takes a whole page of guest space, and routes only
    /// its 256 bytes.
    @Test func subPageRegionTakesAPageAndRoutesItsBytes() throws {
        let tiny = BARRequest(bar: 0, regionIndex: 0, regionSize: 0x100, areas: [])
        let placed = try Self.place([tiny], window: (16 * Self.page)..<(32 * Self.page))
        #expect(placed[0].guestRange == (16 * Self.page)..<(17 * Self.page))
        let router = MMIORouter(placed)
        #expect(router.route(guestPhysicalAddress: 16 * Self.page + 0xfc, length: 4) == MMIORoute(bar: 0, regionIndex: 0, regionOffset: 0xfc))
        #expect(router.route(guestPhysicalAddress: 16 * Self.page + 0x100, length: 4) == nil)
    }

    /// Every address and width around three placed BARs routes exactly when brute force says
    /// the access lies wholly inside one region, to that region at the right offset.
    @Test func routerMatchesBruteForceEverywhere() throws {
        let requests = [
            BARRequest(bar: 0, regionIndex: 0, regionSize: 3 * Self.page, areas: []),
            BARRequest(bar: 2, regionIndex: 2, regionSize: 0x1800, areas: []),
            BARRequest(bar: 4, regionIndex: 4, regionSize: Self.page, areas: []),
        ]
        let placed = try Self.place(requests, window: (2 * Self.page)..<(32 * Self.page), reserved: [(3 * Self.page)..<(4 * Self.page)])
        let router = MMIORouter(placed)
        var routed = 0
        for address in stride(from: UInt64(0), to: 12 * Self.page, by: 4) {
            for length in [1, 2, 4, 8] {
                let inside = placed.first { bar in
                    address >= bar.guestPhysicalAddress && address + UInt64(length) <= bar.guestPhysicalAddress + bar.regionSize
                }
                let expected = inside.map { MMIORoute(bar: $0.bar, regionIndex: $0.regionIndex, regionOffset: address - $0.guestPhysicalAddress) }
                #expect(router.route(guestPhysicalAddress: address, length: length) == expected, "0x\(String(address, radix: 16)) x\(length)")
                if expected != nil { routed += 1 }
            }
        }
        #expect(routed > 0)
        #expect(router.route(guestPhysicalAddress: placed[0].guestPhysicalAddress, length: 0) == nil)
    }

    /// At the real scale: a 2 GiB BAR whose mapping is 1 GiB aligned lands 1 GiB aligned in a
    /// 32-bit guest's window, next to a 1 MiB BAR (edu and ivshmem together).
    @Test func realScaleIvshmemAndEdu() throws {
        let ivshmem = BARRequest(bar: 2, regionIndex: 2, regionSize: 1 << 31,
                                 areas: [HostArea(offset: 0, size: 1 << 31, hostAddress: 0x7f00_4000_0000)])
        let edu = BARRequest(bar: 0, regionIndex: 0, regionSize: 1 << 20,
                             areas: [HostArea(offset: 0, size: 1 << 20, hostAddress: 0x7f12_3450_0000)])
        let placed = try GuestPlacement.place([edu, ivshmem], in: 0x1000_0000..<0xfec0_0000, reserved: [0..<0x20_0000])
        #expect(placed[1].guestPhysicalAddress == 0x4000_0000)
        #expect(placed[1].areas[0].hugePageCongruence == 1 << 30)
        #expect(placed[0].guestPhysicalAddress == 0x1000_0000)
        #expect(placed[0].areas[0].hugePageCongruence == nil)
    }
}

@Suite("DMA reach and the edu DMA engine")
struct EduDMATests {
    @Test func reachIsCheckedAgainstTheMask() throws {
        try DMAReach.check(iova: 0, size: 1 << 28, addressBits: 28)
        #expect(throws: PassthroughError.self) { try DMAReach.check(iova: 1, size: 1 << 28, addressBits: 28) }
        #expect(throws: PassthroughError.self) { try DMAReach.check(iova: UInt64.max, size: 2, addressBits: 64) }
        try DMAReach.check(iova: UInt64.max - 1, size: 1, addressBits: 64)
        #expect(throws: PassthroughError.self) { try DMAReach.check(iova: 0, size: 1, addressBits: 0) }
    }

    @Test func transferRegistersEndWithTheCommand() throws {
        let toDevice = try EduDMATransfer(direction: .ramToDevice, iova: 0x18_0000, count: 256).registerWrites()
        #expect(toDevice.map(\.offset) == [0x80, 0x88, 0x90, 0x98])
        #expect(toDevice.map(\.value) == [0x18_0000, 0x40000, 256, 1])
        let toRAM = try EduDMATransfer(direction: .deviceToRAM, iova: 0x10_0000, bufferOffset: 0x100, count: 16).registerWrites()
        #expect(toRAM.map(\.value) == [0x40100, 0x10_0000, 16, 3])
        // Asking for the completion interrupt sets the command's IRQ bit (4) and nothing else.
        let withIRQ = try EduDMATransfer(direction: .deviceToRAM, iova: 0x10_0000, count: 16, raiseInterrupt: true).registerWrites()
        #expect(withIRQ.last?.offset == 0x98 && withIRQ.last?.value == 7)
        #expect(throws: PassthroughError.self) { try EduDMATransfer(direction: .deviceToRAM, iova: 0, count: 4097).registerWrites() }
        // A transfer that ends at the buffer's last byte aborts QEMU's edu: refused here first.
        #expect(throws: PassthroughError.self) { try EduDMATransfer(direction: .deviceToRAM, iova: 0, count: 4096).registerWrites() }
        #expect(throws: PassthroughError.self) { try EduDMATransfer(direction: .ramToDevice, iova: 0, bufferOffset: 0xf00, count: 0x100).registerWrites() }
        #expect(try EduDMATransfer(direction: .ramToDevice, iova: 0, count: 4095).registerWrites().map(\.value) == [0, 0x40000, 4095, 1])
        #expect(try EduDMATransfer(direction: .ramToDevice, iova: 0, bufferOffset: 0xf00, count: 0xff).registerWrites().count == 4)
        #expect(throws: PassthroughError.self) { try EduDMATransfer(direction: .deviceToRAM, iova: 0, bufferOffset: 4000, count: 100).registerWrites() }
        #expect(throws: PassthroughError.self) { try EduDMATransfer(direction: .ramToDevice, iova: 0x0fff_ff00, count: 0x200).registerWrites() }
        #expect(throws: PassthroughError.self) { try EduDMATransfer(direction: .ramToDevice, iova: 0, count: 0).registerWrites() }
    }

    /// A fake edu: registers, a buffer and "RAM"; the engine copies when the command's start
    /// bit is written, and clears it after `busyPolls` reads of the command register.
    final class FakeEdu {
        var registers: [Int: UInt64] = [:]
        var buffer = [UInt8](repeating: 0, count: 4096)
        var ram = [UInt8](repeating: 0, count: 0x20_0000)
        var busyPolls: Int
        var pollsLeft = 0
        var writesWhileBusy = 0
        init(busyPolls: Int) { self.busyPolls = busyPolls }

        func load(_ offset: Int) -> UInt64 {
            if offset == EduRegisters.dmaCommand, pollsLeft > 0 {
                pollsLeft -= 1
                if pollsLeft == 0 { finish() }
            }
            return registers[offset] ?? 0
        }
        func store(_ value: UInt64, _ offset: Int) {
            if (registers[EduRegisters.dmaCommand] ?? 0) & EduRegisters.commandStart != 0 { writesWhileBusy += 1; return }
            registers[offset] = value
            if offset == EduRegisters.dmaCommand, value & EduRegisters.commandStart != 0 {
                pollsLeft = busyPolls
                if pollsLeft == 0 { finish() }
            }
        }
        private func finish() {
            let source = Int(registers[EduRegisters.dmaSource] ?? 0), destination = Int(registers[EduRegisters.dmaDestination] ?? 0)
            let count = Int(registers[EduRegisters.dmaCount] ?? 0)
            let command = registers[EduRegisters.dmaCommand] ?? 0
            if command & EduRegisters.commandToRAM != 0 {
                let from = source - Int(EduRegisters.bufferAddress)
                ram.replaceSubrange(destination..<(destination + count), with: buffer[from..<(from + count)])
            } else {
                let to = destination - Int(EduRegisters.bufferAddress)
                buffer.replaceSubrange(to..<(to + count), with: ram[source..<(source + count)])
            }
            registers[EduRegisters.dmaCommand] = command & ~EduRegisters.commandStart
        }
    }

    @Test func roundTripThroughTheFakeDevice() throws {
        let edu = FakeEdu(busyPolls: 3)
        let pattern = (0..<256).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        edu.ram.replaceSubrange(0x18_0000..<0x18_0100, with: pattern)
        var pauses = 0
        let engine = EduDMAEngine(load: { offset in edu.load(offset) }, store: { value, offset in edu.store(value, offset) },
                                  pause: { pauses += 1 })
        let polls1 = try engine.run(EduDMATransfer(direction: .ramToDevice, iova: 0x18_0000, count: 256), maxPolls: 10)
        let polls2 = try engine.run(EduDMATransfer(direction: .deviceToRAM, iova: 0x10_0000, count: 256), maxPolls: 10)
        #expect(polls1 == 3 && polls2 == 3)
        #expect(pauses == 4)
        #expect(Array(edu.ram[0x10_0000..<0x10_0100]) == pattern)
        #expect(edu.writesWhileBusy == 0, "no register is written while a transfer runs")
    }

    @Test func aSlowDeviceTimesOutAndABusyOneIsRefused() throws {
        let edu = FakeEdu(busyPolls: 50)
        let engine = EduDMAEngine(load: { offset in edu.load(offset) }, store: { value, offset in edu.store(value, offset) }, pause: {})
        let transfer = EduDMATransfer(direction: .ramToDevice, iova: 0, count: 16)
        #expect(throws: PassthroughError.self) { try engine.run(transfer, maxPolls: 5) }
        // Still running: a second transfer must not be started.
        #expect(throws: PassthroughError.dma("edu's DMA engine is busy with an earlier transfer")) { try engine.run(transfer, maxPolls: 5) }
        #expect(edu.writesWhileBusy == 0)
    }
}
