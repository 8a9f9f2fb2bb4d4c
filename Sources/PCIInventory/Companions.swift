extension PCIInventory {
    /// The other functions of the device's slot (a GPU's HDMI audio, USB and USB-C controller
    /// functions), in address order. They share the device's reset and usually go to the same VM,
    /// though each may sit in its own IOMMU group. SR-IOV VFs share slots by numbering only, so
    /// they are nobody's companions, and bridges are left out.
    public func companions(of address: PCIAddress) -> [PCIDevice] {
        guard let device = device(address), device.physicalFunction == nil else { return [] }
        return devices.filter { other in
            other.address != address && other.address.slot == address.slot
                && other.physicalFunction == nil && !other.isBridge
        }
    }

    /// For a group: the companions of its members that sit in other groups, with their group.
    public func companionsOutside(_ group: IOMMUGroup) -> [PCIDevice] {
        let members = Set(group.devices)
        var seen: Set<PCIAddress> = []
        var result: [PCIDevice] = []
        for member in group.devices {
            for companion in companions(of: member) where !members.contains(companion.address) && seen.insert(companion.address).inserted {
                result.append(companion)
            }
        }
        return result.sorted { $0.address < $1.address }
    }
}
