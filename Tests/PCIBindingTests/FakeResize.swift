import Foundation
import SysfsFixtures
@testable import PCIBinding
@testable import PCIInventory

extension FakePCIKernel {
    /// `resourceN_resize` as drivers/pci/pci-sysfs.c (__resource_resize_store) and
    /// pci_resize_resource handle it: EBUSY with a driver bound (and, from 6.15, with VFs
    /// enabled), EINVAL for a size code the device does not offer, ENOSPC when the upstream
    /// bridge's prefetchable window cannot hold the new size; otherwise the BAR's `resource` line
    /// and the capability's control register take the new size.
    func resize(_ name: String, value: String, directory: String, path: String) throws(BindingError) {
        let address = (directory as NSString).lastPathComponent
        guard let index = Int(name.dropFirst("resource".count).dropLast("_resize".count)), (0..<6).contains(index),
              let code = Int(value), (0...ResizableBARSize.maximumCode).contains(code),
              let newSize = ResizableBARSize.bytes(code: code) else {
            throw failure(path, value, "Invalid argument")
        }
        if driver(of: address) != nil { throw failure(path, value, "Device or resource busy") }
        if refusesResizeWithVFs,
           let count = try? String(contentsOfFile: directory + "/sriov_numvfs", encoding: .utf8), (Int(count.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 0 {
            throw failure(path, value, "Device or resource busy")
        }
        guard let maskText = try? String(contentsOfFile: path, encoding: .utf8),
              let mask = UInt64(maskText.trimmingCharacters(in: .whitespacesAndNewlines), radix: 16),
              mask & (UInt64(1) << UInt64(code)) != 0 else {
            throw failure(path, value, "Invalid argument")
        }
        let bridge = (directory as NSString).deletingLastPathComponent
        if let text = try? String(contentsOfFile: bridge + "/resource", encoding: .utf8),
           let window = parseBridgePrefetchableWindow(text), newSize > window.upperBound - window.lowerBound + 1 {
            throw failure(path, value, "No space left on device")
        }
        do {
            var lines = try String(contentsOfFile: directory + "/resource", encoding: .utf8).split(separator: "\n").map(String.init)
            let columns = lines[index].split(separator: " ")
            guard columns.count == 3, let start = UInt64(columns[0].dropFirst(2), radix: 16) else { throw failure(path, value, "Invalid argument") }
            lines[index] = "\(columns[0]) 0x\(String(start + newSize - 1, radix: 16).leftPadded(16)) \(columns[2])"
            try (lines.joined(separator: "\n") + "\n").write(toFile: directory + "/resource", atomically: false, encoding: .utf8)
            var config = [UInt8](try Data(contentsOf: URL(fileURLWithPath: directory + "/config")))
            let space = PCIConfigSpace(bytes: config)
            if let cap = space.extendedCapabilityOffset(0x15), let first = space.u32(cap + 8) {
                for entry in 0..<Int((first >> 5) & 7) {
                    let offset = cap + 8 + 8 * entry
                    guard let control = space.u32(offset), Int(control & 7) == index else { continue }
                    let updated = control & ~0x1f00 | UInt32(code) << 8
                    for byte in 0..<4 { config[offset + byte] = UInt8(truncatingIfNeeded: updated >> (8 * UInt32(byte))) }
                }
                try Data(config).write(to: URL(fileURLWithPath: directory + "/config"))
            }
        } catch let error as BindingError {
            throw error
        } catch {
            throw failure(path, value, "\(error)")
        }
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
