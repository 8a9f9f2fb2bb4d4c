import Foundation
import PCIInventory
import SysfsFixtures
import Testing

/// Fixture ROMs: the GPU of the workstation fixture (10de:2204) with its images.
enum FixtureROMs {
    static let legacy = FixtureROMImage(vendorID: 0x10de, deviceID: 0x2204, code: .legacyX86, blocks: 8)
    static let efiX64 = FixtureROMImage(vendorID: 0x10de, deviceID: 0x2204, code: .efi(machine: 0x8664), blocks: 6)
    static let valid = FixtureROMImage.rom([legacy])
    static let multiImage = FixtureROMImage.rom([legacy, efiX64])
    static var brokenSignature: [UInt8] { var bytes = valid; bytes[1] = 0xab; return bytes }
    static var truncated: [UInt8] { Array(multiImage.prefix(legacy.blocks * 512 + 1024)) }
    static var badChecksum: [UInt8] { var bytes = valid; bytes[100] &+= 1; return bytes }
}

@Suite struct OptionROMParserTests {
    @Test func validLegacyImage() {
        let rom = OptionROM.parse(FixtureROMs.valid)
        #expect(rom.problems.isEmpty)
        #expect(rom.images.count == 1)
        let image = rom.images[0]
        #expect(image.codeType == .legacyX86)
        #expect(image.vendorID == 0x10de && image.deviceID == 0x2204)
        #expect(image.classCode == 0x030000)
        #expect(image.length == 4096)
        #expect(image.isLast)
        #expect(image.checksumValid == true)
        let verdict = OptionROMVerdict.judge(rom, vendorID: 0x10de, deviceID: 0x2204, isDisplay: true)
        #expect(verdict.servesVM)
        #expect(verdict.legacyImage == 0 && verdict.efiImage == nil)
        #expect(verdict.findings.contains { $0.contains("UEFI (OVMF) guest cannot run") })
    }

    @Test func multiImageLegacyAndEFI() {
        let rom = OptionROM.parse(FixtureROMs.multiImage)
        #expect(rom.problems.isEmpty)
        #expect(rom.images.map(\.offset) == [0, 4096])
        #expect(rom.images.map(\.isLast) == [false, true])
        let efi = rom.images[1]
        #expect(efi.codeType == .efi)
        #expect(efi.efi == OptionROM.EFIHeader(subsystem: 11, machineType: 0x8664, compressed: false))
        #expect(efi.efi?.machineName == "x64")
        #expect(efi.checksumValid == nil)
        let verdict = OptionROMVerdict.judge(rom, vendorID: 0x10de, deviceID: 0x2204, isDisplay: true)
        #expect(verdict.legacyImage == 0 && verdict.efiImage == 1 && verdict.servesVM)
        #expect(verdict.findings.isEmpty)
    }

    @Test func brokenSignatureHasNoImage() {
        let rom = OptionROM.parse(FixtureROMs.brokenSignature)
        #expect(rom.images.isEmpty)
        #expect(rom.problems == ["image at 0x0: no 0x55AA signature (found 0x55 0xab)"])
        let verdict = OptionROMVerdict.judge(rom, vendorID: 0x10de, deviceID: 0x2204, isDisplay: true)
        #expect(!verdict.servesVM)
        #expect(verdict.findings.contains { $0.contains("no valid image for this GPU") })
    }

    @Test func truncatedSecondImage() {
        let rom = OptionROM.parse(FixtureROMs.truncated)
        #expect(rom.images.count == 2)
        #expect(rom.images[0].isValid)
        #expect(rom.images[1].problems.contains { $0.contains("truncated") })
        let verdict = OptionROMVerdict.judge(rom, vendorID: 0x10de, deviceID: 0x2204, isDisplay: true)
        #expect(verdict.legacyImage == 0 && verdict.efiImage == nil)
    }

    @Test func truncatedInsideTheHeader() {
        for length in [1, 2, 0x19, 0x1c + 3, 0x1c + 0x15] {
            let rom = OptionROM.parse(Array(FixtureROMs.valid.prefix(length)))
            #expect(rom.images.isEmpty, "length \(length)")
            #expect(!rom.problems.isEmpty, "length \(length)")
        }
        #expect(OptionROM.parse([]).problems == ["the ROM is empty"])
    }

    @Test func badChecksum() {
        let rom = OptionROM.parse(FixtureROMs.badChecksum)
        #expect(rom.images.first?.checksumValid == false)
        #expect(rom.images.first?.problems == ["checksum over 4096 bytes is 0x01, not 0"])
        #expect(!OptionROMVerdict.judge(rom, vendorID: 0x10de, deviceID: 0x2204, isDisplay: false).servesVM)
    }

    @Test func otherDevicesImageIsSkipped() {
        let rom = OptionROM.parse(FixtureROMs.multiImage)
        let verdict = OptionROMVerdict.judge(rom, vendorID: 0x10de, deviceID: 0x2206, isDisplay: true)
        #expect(verdict.mismatched == [0, 1])
        #expect(!verdict.servesVM)
        // Unmatched (a file on its own): judged on the images alone.
        #expect(OptionROMVerdict.judge(rom, vendorID: nil, deviceID: nil, isDisplay: true).servesVM)
    }

    @Test func deviceListOfPCIR3MatchesFurtherDevices() {
        var bytes = FixtureROMs.valid
        // PCIR revision 3 with a device list at PCIR+0x20: 0x2206, 0x2208, end.
        let pcir = 0x1c
        bytes[pcir + 0x0c] = 3
        bytes[pcir + 8] = 0x20
        for (index, value) in [0x06, 0x22, 0x08, 0x22, 0, 0].enumerated() { bytes[pcir + 0x20 + index] = UInt8(value) }
        let sum = bytes[0..<4096].reduce(UInt8(0)) { $0 &+ $1 }
        bytes[4095] &-= sum
        let rom = OptionROM.parse(bytes)
        #expect(rom.images.first?.extraDeviceIDs == [0x2206, 0x2208])
        #expect(OptionROMVerdict.judge(rom, vendorID: 0x10de, deviceID: 0x2208, isDisplay: true).servesVM)
        #expect(!OptionROMVerdict.judge(rom, vendorID: 0x10de, deviceID: 0x2207, isDisplay: true).servesVM)
    }

    @Test func efiForAnotherMachineDoesNotServeAnX64Guest() {
        let arm = FixtureROMImage(vendorID: 0x10de, deviceID: 0x2204, code: .efi(machine: 0xaa64), blocks: 2)
        let rom = OptionROM.parse(FixtureROMImage.rom([arm]))
        #expect(rom.images.first?.efi?.machineName == "AArch64")
        #expect(rom.images.first?.isValid == true)
        #expect(!OptionROMVerdict.judge(rom, vendorID: 0x10de, deviceID: 0x2204, isDisplay: true).servesVM)
    }

    @Test func zeroLengthImageNotMarkedLastStops() {
        var bytes = FixtureROMImage.rom([FixtureROMs.legacy, FixtureROMs.efiX64])
        bytes[0x1c + 0x10] = 0
        bytes[0x1c + 0x11] = 0
        let rom = OptionROM.parse(bytes)
        #expect(rom.images.count == 1)
        #expect(rom.images[0].problems.contains("PCIR image length is 0"))
        #expect(rom.problems.contains { $0.contains("has length 0") })
    }

    @Test func pcirPointerOutsideTheROM() {
        var bytes = FixtureROMs.valid
        bytes[0x18] = 0xff
        bytes[0x19] = 0xff
        #expect(OptionROM.parse(bytes).problems == ["image at 0x0: no PCIR structure at +0xffff"])
    }

    @Test func randomBytesNeverTrap() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var bytes = FixtureROMs.multiImage
            for _ in 0..<8 { bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator) }
            let cut = Int.random(in: 0...bytes.count, using: &generator)
            let rom = OptionROM.parse(Array(bytes.prefix(cut)))
            #expect(rom.images.count <= 2)
        }
    }
}

/// The enable/read/disable sequence, including its clean-up on failure.
@Suite struct ROMReaderSequenceTests {
    final class FakeROM: ROMAttribute {
        var operations: [String] = []
        var failRead = false
        var failEnable = false
        func setEnabled(_ enabled: Bool) throws(ROMReadError) {
            operations.append(enabled ? "enable" : "disable")
            if enabled, failEnable { throw ROMReadError("enable refused") }
        }
        func readAll(limit: Int) throws(ROMReadError) -> [UInt8] {
            operations.append("read")
            if failRead { throw ROMReadError("read failed") }
            return FixtureROMs.valid
        }
    }

    @Test func enablesReadsDisables() throws {
        let fake = FakeROM()
        #expect(try ROMReader.read(fake) == FixtureROMs.valid)
        #expect(fake.operations == ["enable", "read", "disable"])
    }

    @Test func disablesAgainWhenTheReadFails() {
        let fake = FakeROM()
        fake.failRead = true
        #expect(throws: ROMReadError("read failed")) { try ROMReader.read(fake) }
        #expect(fake.operations == ["enable", "read", "disable"])
    }

    /// A copied tree is read-only to vfioctl: its `rom` is a plain file holding the ROM, and
    /// writing the enable bit would overwrite the signature (issue 20). It is read as it is.
    @Test func copiedTreeROMIsReadNeverWritten() throws {
        let root = NSTemporaryDirectory() + "vfioctl-romattr-\(UUID().uuidString)"
        let directory = root + "/bus/pci/devices/0000:01:00.0"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Data(FixtureROMs.multiImage).write(to: URL(fileURLWithPath: directory + "/rom"))
        let address = try PCIAddress(parsing: "01:00.0")
        let attribute = SysfsROMAttribute(root: SysfsRoot(path: root), address: address)
        #expect(throws: ROMReadError.self) { try attribute.setEnabled(true) }
        #expect(throws: ROMReadError.self) { try attribute.setEnabled(false) }
        #expect(try FixtureTestSupport.readBytes(directory + "/rom") == FixtureROMs.multiImage)
        #expect(try ROMReader.read(root: SysfsRoot(path: root), address: address) == FixtureROMs.multiImage)
        #expect(try FixtureTestSupport.readBytes(directory + "/rom") == FixtureROMs.multiImage)
        #expect(throws: ROMReadError.self) { try attribute.readAll(limit: 512) }
    }

    /// A `rom` symlink that leaves the root, or a FIFO in its place, is refused at once.
    @Test func romOutsideTheRootOrAFIFOIsRefused() throws {
        let root = NSTemporaryDirectory() + "vfioctl-romattr-\(UUID().uuidString)"
        let directory = root + "/bus/pci/devices/0000:01:00.0"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let outside = root + "-outside"
        try Data("IMPORTANT-CONFIG".utf8).write(to: URL(fileURLWithPath: outside))
        defer { try? FileManager.default.removeItem(atPath: outside) }
        try FileManager.default.createSymbolicLink(atPath: directory + "/rom", withDestinationPath: outside)
        let address = try PCIAddress(parsing: "01:00.0")
        #expect(throws: ROMReadError.self) { try ROMReader.read(root: SysfsRoot(path: root), address: address) }
        #expect(try FixtureTestSupport.readBytes(outside) == Array("IMPORTANT-CONFIG".utf8))
        try FileManager.default.removeItem(atPath: directory + "/rom")
        #expect(mkfifo(directory + "/rom", 0o600) == 0)
        let started = Date()
        #expect(throws: ROMReadError.self) { try ROMReader.read(root: SysfsRoot(path: root), address: address) }
        #expect(Date().timeIntervalSince(started) < 1)
    }

    @Test func readsNothingWhenEnableFails() {
        let fake = FakeROM()
        fake.failEnable = true
        #expect(throws: ROMReadError("enable refused")) { try ROMReader.read(fake) }
        #expect(fake.operations == ["enable"])
    }
}

@Suite struct ROMCLITests {
    func write(_ bytes: [UInt8]) throws -> String {
        let path = NSTemporaryDirectory() + "vfioctl-rom-\(UUID().uuidString).rom"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func checksFixtureFilesAgainstTheWorkstationGPU() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let cases: [([UInt8], Int32, String)] = [
                (FixtureROMs.multiImage, 0, "UEFI x64 guest:    yes (image 1)"),
                (FixtureROMs.valid, 0, "legacy BIOS guest: yes (image 0)"),
                (FixtureROMs.brokenSignature, 2, "no 0x55AA signature"),
                (FixtureROMs.truncated, 0, "truncated"),
                (FixtureROMs.badChecksum, 2, "checksum BAD"),
            ]
            for (bytes, status, text) in cases {
                let path = try write(bytes)
                defer { try? FileManager.default.removeItem(atPath: path) }
                let result = try VfioctlBinary.run(["rom", "check", "--file", path, "--device", "01:00.0", "--sysfs-root", tree.rootPath])
                #expect(result.status == status, "\(text): \(result.stdout) \(result.stderr)")
                #expect(result.stdout.contains(text), "\(result.stdout)")
            }
            let path = try write(FixtureROMs.multiImage)
            defer { try? FileManager.default.removeItem(atPath: path) }
            // The GPU's audio function (10de:1aef) is another device: both images are skipped.
            let other = try VfioctlBinary.run(["rom", "check", "--file", path, "--device", "01:00.1", "--sysfs-root", tree.rootPath, "--json"])
            #expect(other.status == 2)
            let json = try #require(try JSONSerialization.jsonObject(with: Data(other.stdout.utf8)) as? [String: Any])
            #expect(json["serves_vm"] as? Bool == false)
            #expect(json["address"] as? String == "0000:01:00.1")
            let images = try #require(json["images"] as? [[String: Any]])
            #expect(images.compactMap { $0["code_type"] as? String } == ["legacy-x86", "efi"])
            #expect(images[1]["efi_machine"] as? String == "x64")
            #expect(images[0]["efi_machine"] is NSNull)
            #expect(json["legacy_image"] is NSNull)
        }
    }

    @Test func deviceWithoutROMIsAClearErrorAndNothingChanges() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let before = try FileManager.default.contentsOfDirectory(atPath: tree.rootPath + "/bus/pci/devices/0000:02:00.0")
            let result = try VfioctlBinary.run(["rom", "check", "02:00.0", "--sysfs-root", tree.rootPath])
            #expect(result.status == 1)
            #expect(result.stderr.contains("0000:02:00.0 has no option ROM"))
            #expect(result.stdout.isEmpty)
            let after = try FileManager.default.contentsOfDirectory(atPath: tree.rootPath + "/bus/pci/devices/0000:02:00.0")
            #expect(before.sorted() == after.sorted())
        }
    }

    @Test(arguments: [["rom", "check"], ["rom", "check", "01:00.0", "--file", "/dev/null"], ["rom", "check", "01:00.0", "--device", "01:00.0"]])
    func usageErrors(arguments: [String]) throws {
        #expect(try VfioctlBinary.run(arguments).status == 64)
    }
}
