/// The rule for a VFIO device file's name, as sysfs gives it in `DEVICE/vfio-dev/vfioN`: the
/// inventory lists it, and the VFIO library opens /dev/vfio/devices/ by it.
public enum VFIODeviceFileName {
    /// A `vfio-dev/` directory that is not what the kernel writes.
    public struct Malformed: Error, Equatable {
        /// Why, naming the directory.
        public let reason: String
    }

    /// Whether `name` is one the kernel writes: "vfio" and a decimal number without leading
    /// zeros, at most 10 digits (so it can never name a path outside /dev/vfio/devices).
    public static func isValid(_ name: String) -> Bool {
        guard name.hasPrefix("vfio") else { return false }
        let digits = name.dropFirst(4)
        guard !digits.isEmpty, digits.count <= 10, digits.allSatisfy({ ("0"..."9").contains($0) }) else { return false }
        return digits == "0" || digits.first != "0"
    }

    /// The name in `deviceDirectory`/vfio-dev; nil when that directory does not exist. Anything
    /// but exactly one valid entry throws.
    public static func read(deviceDirectory: String) throws(Malformed) -> String? {
        let directory = deviceDirectory + "/vfio-dev"
        guard let entries = SysfsReader().listDirectory(directory) else { return nil }
        guard entries.count == 1, let name = entries.first else {
            throw Malformed(reason: "\(directory) " + (entries.isEmpty ? "is empty" : "holds \(entries.count) entries (\(entries.sorted().joined(separator: ", "))), the kernel makes one"))
        }
        guard isValid(name) else {
            throw Malformed(reason: "\(directory) holds \"\(name)\", which is not a VFIO device file name (vfioN)")
        }
        return name
    }
}
