import TextFormat
/// A PCI expansion ROM, parsed image by image (PCI Firmware Specification, "PCI Expansion ROMs").
/// Pure: takes the bytes, never a file, so every malformed ROM can be tested.
public struct OptionROM: Sendable, Equatable {
    /// Bytes in the ROM as read.
    public var size: Int
    /// The images in order, each at its offset.
    public var images: [Image]
    /// Where parsing had to stop, or what is wrong outside any one image.
    public var problems: [String]

    /// An image's code type (PCIR code type byte).
    public enum CodeType: Sendable, Equatable {
        case legacyX86
        case openFirmware
        case hpPARISC
        case efi
        case other(UInt8)

        init(_ raw: UInt8) {
            switch raw {
            case 0x00: self = .legacyX86
            case 0x01: self = .openFirmware
            case 0x02: self = .hpPARISC
            case 0x03: self = .efi
            default: self = .other(raw)
            }
        }

        /// The code type in words.
        public var name: String {
            switch self {
            case .legacyX86: "legacy x86 (PC-AT BIOS)"
            case .openFirmware: "Open Firmware"
            case .hpPARISC: "HP PA-RISC"
            case .efi: "EFI"
            case .other(let raw): "code type 0x" + hex2(raw)
            }
        }

        /// The code type as a JSON key.
        public var key: String {
            switch self {
            case .legacyX86: "legacy-x86"
            case .openFirmware: "open-firmware"
            case .hpPARISC: "hp-pa-risc"
            case .efi: "efi"
            case .other: "other"
            }
        }
    }

    /// The EFI image header fields that say where and how the driver runs.
    public struct EFIHeader: Sendable, Equatable {
        /// EFI subsystem (10: boot service driver, 11: runtime driver...).
        public var subsystem: UInt16
        /// EFI machine type (0x8664 x64, 0x0ebc EFI Byte Code, 0xaa64 AArch64...).
        public var machineType: UInt16
        /// Whether the EFI image is compressed.
        public var compressed: Bool

        /// A header as given.
        public init(subsystem: UInt16, machineType: UInt16, compressed: Bool) {
            self.subsystem = subsystem
            self.machineType = machineType
            self.compressed = compressed
        }

        /// The machine type in words.
        public var machineName: String {
            switch machineType {
            case 0x014c: "IA32"
            case 0x0200: "Itanium"
            case 0x0ebc: "EFI Byte Code"
            case 0x8664: "x64"
            case 0x01c2: "ARM"
            case 0xaa64: "AArch64"
            case 0x5032: "RISC-V 32"
            case 0x5064: "RISC-V 64"
            case 0x6264: "LoongArch 64"
            default: "machine 0x" + hex4(machineType)
            }
        }

        /// The subsystem in words.
        public var subsystemName: String {
            switch subsystem {
            case 10: "application"
            case 11: "boot service driver"
            case 12: "runtime driver"
            default: "subsystem \(subsystem)"
            }
        }

        /// x64 and EFI Byte Code drivers run in an x86-64 UEFI guest (OVMF); others do not.
        public var runsOnX64: Bool { machineType == 0x8664 || machineType == 0x0ebc }
    }

    /// One image of the ROM, from its header and PCI Data Structure (PCIR).
    public struct Image: Sendable, Equatable {
        /// Where the image starts in the ROM.
        public var offset: Int
        /// The vendor ID the image serves.
        public var vendorID: UInt16
        /// The device ID the image serves.
        public var deviceID: UInt16
        /// Further device IDs the image serves (PCIR revision 3 device list).
        public var extraDeviceIDs: [UInt16]
        /// The class code the image is for.
        public var classCode: UInt32
        /// What code the image holds.
        public var codeType: CodeType
        /// The PCIR's last-image indicator.
        public var isLast: Bool
        /// From the PCIR structure, in bytes (its field counts 512-byte units).
        public var length: Int
        /// nil for non-legacy images; true when the initialization area sums to zero mod 256.
        public var checksumValid: Bool?
        /// The EFI header, for EFI images.
        public var efi: EFIHeader?
        /// Why this image cannot be used as it stands; empty when it can.
        public var problems: [String]

        /// Whether the image is well formed.
        public var isValid: Bool { problems.isEmpty }

        /// Whether the image serves this vendor:device (its device ID or the PCIR device list).
        public func serves(vendorID: UInt16, deviceID: UInt16) -> Bool {
            self.vendorID == vendorID && (self.deviceID == deviceID || extraDeviceIDs.contains(deviceID))
        }
    }

    /// Parses every image. Never traps on any input: each offset is bounds-checked before use.
    public static func parse(_ bytes: [UInt8]) -> OptionROM {
        var rom = OptionROM(size: bytes.count, images: [], problems: [])
        if bytes.isEmpty {
            rom.problems.append("the ROM is empty")
            return rom
        }
        var offset = 0
        // A ROM BAR is at most 16 MiB, so 512-byte images bound the count; the guard also stops a
        // zero-length image from looping forever.
        while offset < bytes.count {
            guard let image = parseImage(bytes, at: offset, rom: &rom) else { break }
            rom.images.append(image)
            if image.isLast { break }
            guard image.length > 0 else {
                rom.problems.append("image at \(offset.hex()) has length 0 and is not marked last: cannot find the next image")
                break
            }
            let (next, overflow) = offset.addingReportingOverflow(image.length)
            guard !overflow, next < bytes.count else {
                rom.problems.append("image at \(offset.hex()) is not marked last, but the ROM ends after it (truncated?)")
                break
            }
            offset = next
        }
        return rom
    }

    private static func parseImage(_ bytes: [UInt8], at offset: Int, rom: inout OptionROM) -> Image? {
        let at = "image at " + offset.hex()
        guard let b0 = byte(bytes, offset), let b1 = byte(bytes, offset + 1), b0 == 0x55, b1 == 0xaa else {
            let found = [byte(bytes, offset), byte(bytes, offset + 1)].map { $0.map { "0x" + hex2($0) } ?? "end" }
            rom.problems.append("\(at): no 0x55AA signature (found \(found.joined(separator: " ")))")
            return nil
        }
        guard let pcirPointer = le16(bytes, offset + 0x18) else {
            rom.problems.append("\(at): header truncated before its PCIR pointer")
            return nil
        }
        let pcir = offset + Int(pcirPointer)
        guard byte(bytes, pcir) == 0x50, byte(bytes, pcir + 1) == 0x43, byte(bytes, pcir + 2) == 0x49, byte(bytes, pcir + 3) == 0x52 else {
            rom.problems.append("\(at): no PCIR structure at +\(pcirPointer.hex())")
            return nil
        }
        guard let vendorID = le16(bytes, pcir + 4), let deviceID = le16(bytes, pcir + 6),
              let deviceListPointer = le16(bytes, pcir + 8), let structureLength = le16(bytes, pcir + 0x0a),
              let structureRevision = byte(bytes, pcir + 0x0c),
              let class0 = byte(bytes, pcir + 0x0d), let class1 = byte(bytes, pcir + 0x0e), let class2 = byte(bytes, pcir + 0x0f),
              let imageUnits = le16(bytes, pcir + 0x10), let rawCodeType = byte(bytes, pcir + 0x14),
              let indicator = byte(bytes, pcir + 0x15) else {
            rom.problems.append("\(at): PCIR structure truncated")
            return nil
        }
        var image = Image(
            offset: offset, vendorID: vendorID, deviceID: deviceID, extraDeviceIDs: [],
            classCode: UInt32(class2) << 16 | UInt32(class1) << 8 | UInt32(class0),
            codeType: CodeType(rawCodeType), isLast: indicator & 0x80 != 0,
            length: Int(imageUnits) * 512, checksumValid: nil, efi: nil, problems: []
        )
        if structureLength < 0x18 {
            image.problems.append("PCIR structure length \(structureLength) is shorter than the 24 bytes it must hold")
        }
        if image.length == 0 {
            image.problems.append("PCIR image length is 0")
        } else if offset + image.length > bytes.count {
            image.problems.append("image claims \(image.length) bytes but only \(bytes.count - offset) remain: truncated")
        }
        // PCI 3.0 (PCIR revision 3) may list further device IDs, ending in 0.
        if structureRevision >= 3, deviceListPointer != 0 {
            var entry = pcir + Int(deviceListPointer)
            while let id = le16(bytes, entry), id != 0, image.extraDeviceIDs.count < 256 {
                image.extraDeviceIDs.append(id)
                entry += 2
            }
        }
        switch image.codeType {
        case .legacyX86:
            // Byte 2 is the initialization size in 512-byte units; those bytes sum to zero.
            let initSize = Int(byte(bytes, offset + 2) ?? 0) * 512
            if initSize == 0 {
                image.problems.append("legacy header's initialization size is 0")
            } else if offset + initSize > bytes.count {
                image.problems.append("legacy initialization size \(initSize) runs past the end of the ROM: truncated")
            } else {
                var sum: UInt8 = 0
                for value in bytes[offset..<(offset + initSize)] { sum &+= value }
                image.checksumValid = sum == 0
                if sum != 0 { image.problems.append("checksum over \(initSize) bytes is 0x\(hex2(sum)), not 0") }
            }
        case .efi:
            guard let signature = le16(bytes, offset + 4), let signatureHigh = le16(bytes, offset + 6),
                  let subsystem = le16(bytes, offset + 8), let machine = le16(bytes, offset + 0x0a),
                  let compression = le16(bytes, offset + 0x0c) else {
                image.problems.append("EFI header truncated")
                break
            }
            image.efi = EFIHeader(subsystem: subsystem, machineType: machine, compressed: compression != 0)
            if UInt32(signatureHigh) << 16 | UInt32(signature) != 0x0ef1 {
                image.problems.append("EFI signature is \((UInt32(signatureHigh) << 16 | UInt32(signature)).hex()), not 0xef1")
            }
        default:
            break
        }
        return image
    }

    private static func byte(_ bytes: [UInt8], _ index: Int) -> UInt8? {
        index >= 0 && index < bytes.count ? bytes[index] : nil
    }

    private static func le16(_ bytes: [UInt8], _ index: Int) -> UInt16? {
        guard let low = byte(bytes, index), let high = byte(bytes, index + 1) else { return nil }
        return UInt16(high) << 8 | UInt16(low)
    }
}

/// Whether a ROM will serve a VM: the rules, apart from any I/O.
public struct OptionROMVerdict: Sendable, Equatable {
    /// The first valid legacy x86 image for the device, if any (SeaBIOS runs it).
    public var legacyImage: Int?
    /// The first valid EFI image an x86-64 UEFI guest (OVMF) can run, if any.
    public var efiImage: Int?
    /// Images that are well formed but name another vendor:device.
    public var mismatched: [Int]
    /// True when the ROM is usable for this device (for a display device: it has a valid image).
    public var servesVM: Bool
    /// What the check found, in words a user can act on.
    public var findings: [String]

    /// `vendorID`/`deviceID` nil: the device is unknown (a ROM file checked alone), so images are
    /// not matched against it. `isDisplay`: a GPU, whose guest driver and firmware need the ROM.
    public static func judge(_ rom: OptionROM, vendorID: UInt16?, deviceID: UInt16?, isDisplay: Bool) -> OptionROMVerdict {
        var verdict = OptionROMVerdict(legacyImage: nil, efiImage: nil, mismatched: [], servesVM: false, findings: [])
        for (index, image) in rom.images.enumerated() where image.isValid {
            if let vendorID, let deviceID, !image.serves(vendorID: vendorID, deviceID: deviceID) {
                verdict.mismatched.append(index)
                continue
            }
            switch image.codeType {
            case .legacyX86 where verdict.legacyImage == nil: verdict.legacyImage = index
            case .efi where verdict.efiImage == nil && image.efi?.runsOnX64 == true: verdict.efiImage = index
            default: break
            }
        }
        let usable = verdict.legacyImage != nil || verdict.efiImage != nil
        verdict.servesVM = usable
        if let vendorID, let deviceID, !verdict.mismatched.isEmpty {
            verdict.findings.append("image \(verdict.mismatched.map(String.init).joined(separator: ", ")) names another device than \(hex4(vendorID)):\(hex4(deviceID)); guest firmware skips it")
        }
        if !usable {
            verdict.findings.append(isDisplay
                ? "no valid image for this GPU: the guest gets no video BIOS/GOP driver; pass a good ROM file to the VMM (QEMU: romfile=)"
                : "no valid image: give the VMM no ROM for this device (QEMU: rombar=0) or a good ROM file (romfile=)")
        } else {
            if verdict.legacyImage == nil { verdict.findings.append("no legacy x86 image: a BIOS (SeaBIOS) guest cannot run this ROM") }
            if verdict.efiImage == nil { verdict.findings.append("no x64 EFI image: a UEFI (OVMF) guest cannot run this ROM\(isDisplay ? " and gets no boot display from this GPU" : "")") }
        }
        return verdict
    }
}
