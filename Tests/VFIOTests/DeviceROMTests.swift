import Foundation
import PCIInventory
import SysfsFixtures
import Testing
@testable import VFIO

/// DeviceROM.read's choice of source on a copied tree: the tree's `rom` file read as it is, and a
/// clear refusal for a device with neither a ROM BAR nor a `rom` attribute.
@Suite struct DeviceROMTests {
    @Test func aCopiedTreeIsReadAsItIsAndADeviceWithoutROMIsRefused() throws {
        try withTemporarySysfsTree(.gpuWorkstation) { tree in
            let root = SysfsRoot(path: tree.rootPath)
            let inventory = try PCIInventory.scan(root: root, detail: .summary)
            let withROM = try #require(inventory.devices.first { $0.rom != nil }, "the workstation fixture has a device with a ROM BAR")
            let image: [UInt8] = [0x55, 0xAA, 0x01] + [UInt8](repeating: 0, count: 509)
            let path = root.appending("bus/pci/devices/\(withROM.address)/rom")
            try? FileManager.default.removeItem(atPath: path)
            try Data(image).write(to: URL(fileURLWithPath: path))
            let rom = try DeviceROM.read(withROM, root: root, isPrivileged: false)
            #expect(rom.bytes == image)
            #expect(rom.source == .copiedTree(root: tree.rootPath))
            #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: path))) == image, "the copied tree is never written")

            let without = try #require(inventory.devices.first { device in
                device.rom == nil && !FileManager.default.fileExists(atPath: root.appending("bus/pci/devices/\(device.address)/rom"))
            })
            #expect(throws: DeviceROMError.noROM(without.address)) { try DeviceROM.read(without, root: root) }
        }
    }
}
