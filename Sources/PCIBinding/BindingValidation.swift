#if canImport(Glibc)
import Glibc
#endif
import PCIInventory

/// What is wrong with a value, in words that follow the value ("is not a PCI address").
public struct ValidationProblem: Error, Equatable, CustomStringConvertible {
    /// The problem, in words that follow the value.
    public let description: String
    /// A problem that says `description`.
    public init(_ description: String) { self.description = description }
}

/// Checks for values that come from the journal or sysfs before they reach a path or a decision.
/// Pure: a value either passes unchanged or the problem is named.
public enum BindingValidation {
    /// Longer than any kernel driver name; anything longer is not one.
    public static let maximumDriverNameLength = 64

    /// The address in the kernel's canonical form ("0000:03:00.0"), the only form sysfs uses
    /// for device names; anything else (padding, upper case, short forms) is refused.
    public static func canonicalAddress(_ text: String) -> Result<PCIAddress, ValidationProblem> {
        guard let address = try? PCIAddress(parsing: text) else { return .failure(.init("is not a PCI address")) }
        guard address.description == text else { return .failure(.init("is not in the canonical form \(address)")) }
        return .success(address)
    }

    /// nil when `name` can be a driver name: one path component of printable ASCII, no '/',
    /// not "." or "..", no more than `maximumDriverNameLength` bytes.
    public static func driverNameProblem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        if bytes.isEmpty { return "is empty" }
        if bytes.count > maximumDriverNameLength { return "is longer than \(maximumDriverNameLength) bytes" }
        if name == "." || name == ".." { return "is not a name" }
        if bytes.contains(UInt8(ascii: "/")) { return "contains '/'" }
        if bytes.contains(where: { $0 <= 0x20 || $0 >= 0x7f }) { return "contains a control, space or non-ASCII byte" }
        return nil
    }

    /// `path` with every link resolved, or nil when it does not exist.
    public static func resolvedPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// True when `path` (already resolved) is `directory` or lies below it.
    public static func isInside(_ path: String, _ directory: String) -> Bool {
        directory == "/" || path == directory || path.hasPrefix(directory + "/")
    }
}
