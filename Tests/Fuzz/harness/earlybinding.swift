import Foundation

// The early-binding record (etc/vfioctl/early-binding.json, read back by `persist
// remove/check/list`) and the files planned from it. Two halves, chosen by the first byte:
// - arbitrary text as a record read from disk: decoding never traps, and what it accepts holds
//   only canonical addresses, valid module names and paths a plan writes, and plans files that
//   are ours and name exactly its devices;
// - a record built from the input (addresses, module names of any bytes) written and read back:
//   the read gives the same record, never another (no value escapes its field).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEarlyBinding(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let mode = input.byte()
    if mode & 1 == 0 {
        let text = String(decoding: input.remaining, as: UTF8.self)
        _ = EarlyBindingPlan.addresses(in: Array(input.remaining))
        _ = EarlyBindingPlan.isOurs(Array(input.remaining))
        guard case .success(let record) = EarlyBindingRecord.decode(text) else { return 0 }
        check(record)
        guard case .success(let again) = EarlyBindingRecord.decode(record.encoded()) else {
            fatalError("invariant: an accepted record does not read back: \(record)")
        }
        require(sorted(again) == sorted(record), "a record read back differs: \(record) -> \(again)")
        return 0
    }
    var devices: [EarlyDevice] = []
    for _ in 0..<Int(input.byte() % 4) {
        guard let address = try? PCIAddress(domain: UInt32(input.u16()), bus: input.byte(), device: input.byte() & 0x1f, function: input.byte() & 7) else { continue }
        let length = Int(input.byte() % 24)
        let module: String? = length == 0 ? nil : String(decoding: (0..<length).map { _ in input.byte() }, as: UTF8.self)
        devices.append(EarlyDevice(address: address, nativeModule: module))
    }
    let tool: InitramfsTool = mode & 2 == 0 ? .initramfsTools : .dracut
    let files = EarlyBindingPlan.files(for: devices, tool: tool)
    let record = EarlyBindingRecord(tool: tool, devices: devices, files: files.map(\.path))
    // A module name that is not one never reaches the record (nor a softdep).
    for device in devices { require(device.nativeModule.map(EarlyBindingPlan.isValidModuleName) ?? true, "kept module \(device.nativeModule ?? "")") }
    guard case .success(let read) = EarlyBindingRecord.decode(record.encoded()) else {
        fatalError("invariant: a record vfioctl wrote does not read back: \(record.encoded())")
    }
    check(read)
    require(sorted(read) == sorted(record), "written \(record), read back \(read)")
    return 0
}

func sorted(_ record: EarlyBindingRecord) -> EarlyBindingRecord {
    EarlyBindingRecord(tool: record.tool, devices: record.devices.sorted(), files: record.files.sorted())
}

/// What an accepted record must hold, and what its plan must write.
func check(_ record: EarlyBindingRecord) {
    for device in record.devices {
        require(BindingValidation.canonicalAddress(device.address.description) == .success(device.address), "address \(device.address)")
        if let module = device.nativeModule { require(EarlyBindingPlan.isValidModuleName(module), "module \(module)") }
    }
    require(record.files.allSatisfy(EarlyBindingPlan.knownPaths.contains), "files \(record.files)")
    let addresses = Set(record.devices.map(\.address))
    for file in EarlyBindingPlan.files(for: record.devices, tool: record.tool) {
        let bytes = Array(file.contents.utf8)
        require(EarlyBindingPlan.isOurs(bytes), "\(file.path) lacks the marker")
        require(EarlyBindingPlan.addresses(in: bytes).isSubset(of: addresses), "\(file.path) names a device not in the record")
        for line in file.contents.split(separator: "\n") where line.hasPrefix("softdep ") {
            let words = line.split(separator: " ")
            require(words.count == 4 && EarlyBindingPlan.isValidModuleName(String(words[1])), "softdep line \(line)")
        }
    }
}
