// The option ROM parser and the verdict built on it (`rom check`, `vm config`'s rombar), on
// arbitrary ROM bytes: no trap, images in order inside the ROM, and a ROM said to serve a VM
// only when it holds a valid image for the device.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOptionROM(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    // The first bytes choose the device the verdict is for; the rest is the ROM.
    let vendorID = input.u16(), deviceID = input.u16(), isDisplay = input.byte() & 1 == 1
    let bytes = Array(input.remaining)
    let rom = OptionROM.parse(bytes)
    require(rom.size == bytes.count, "size \(rom.size) for \(bytes.count) bytes")
    require(bytes.isEmpty == rom.images.isEmpty || !bytes.isEmpty, "images in an empty ROM")
    var previous = -1
    for image in rom.images {
        require(image.offset > previous && image.offset < bytes.count, "image at \(image.offset) out of order or outside \(bytes.count) bytes")
        require(image.offset % 512 == 0, "image at \(image.offset) not on a 512-byte boundary")
        require(image.length >= 0 && image.length % 512 == 0, "image length \(image.length)")
        require(image.extraDeviceIDs.count <= 256 && !image.extraDeviceIDs.contains(0), "device list \(image.extraDeviceIDs)")
        require(image.checksumValid == nil || image.codeType == .legacyX86, "a checksum judged on a non-legacy image")
        previous = image.offset
    }
    require(rom.images.dropLast().allSatisfy { !$0.isLast }, "an image after the last one")
    require(OptionROM.parse(bytes) == rom, "two parses of the same bytes differ")
    let verdict = OptionROMVerdict.judge(rom, vendorID: vendorID, deviceID: deviceID, isDisplay: isDisplay)
    for index in [verdict.legacyImage, verdict.efiImage].compactMap({ $0 }) + verdict.mismatched {
        require(rom.images.indices.contains(index), "the verdict names image \(index) of \(rom.images.count)")
    }
    if let legacy = verdict.legacyImage {
        require(rom.images[legacy].isValid && rom.images[legacy].codeType == .legacyX86, "legacy image \(legacy) is not a valid legacy image")
    }
    if let efi = verdict.efiImage {
        require(rom.images[efi].isValid && rom.images[efi].efi?.runsOnX64 == true, "EFI image \(efi) does not run on x64")
    }
    if verdict.servesVM {
        require(verdict.legacyImage != nil || verdict.efiImage != nil, "serves a VM with no usable image")
    }
    return 0
}
