#if canImport(Glibc)
import Glibc
#endif
import PCIInventory
import SystemCalls

/// The user (and group) a device's VFIO nodes are given to, so that a VMM run as that user opens
/// the device and no other unprivileged user can (`bind --owner`, `persist add --owner`).
public struct NodeOwner: Sendable, Equatable, Codable, CustomStringConvertible {
    /// The user's name.
    public let user: String
    /// The user's id.
    public let uid: UInt32
    /// The group's name.
    public let group: String
    /// The group's id.
    public let gid: UInt32

    /// An owner as given (names and ids already looked up).
    public init(user: String, uid: UInt32, group: String, gid: UInt32) {
        self.user = user
        self.uid = uid
        self.group = group
        self.gid = gid
    }

    /// The kernel's owner of a VFIO node: root, root.
    public static let root = NodeOwner(user: "root", uid: 0, group: "root", gid: 0)

    /// The mode every node gets, whoever owns it: read and write for the owner only. The kernel
    /// makes /dev/vfio/N and the device files 0600 root; guides that say `chmod 666` give the
    /// device to every local user.
    public static let mode: mode_t = 0o600

    /// "user:group".
    public var description: String { "\(user):\(group)" }

    /// Whether `name` can be a user or group name: what useradd accepts portably (letters, digits,
    /// `.`, `_`, `-`, a final `$`), not starting with `-`, at most 32 characters. Anything else
    /// (a `:`, a newline, a quote) could not be written into a udev rule or the journal safely.
    public static func nameProblem(_ name: String) -> String? {
        if name.isEmpty { return "is empty" }
        if name.utf8.count > 32 { return "is longer than 32 characters" }
        if name.hasPrefix("-") { return "starts with -" }
        let allowed = name.utf8.enumerated().allSatisfy { index, byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"): true
            case UInt8(ascii: "$"): index == name.utf8.count - 1
            default: false
            }
        }
        if !allowed { return "has characters a user or group name cannot have (letters, digits, . _ - only)" }
        if name.allSatisfy(\.isNumber) { return "is a number; give the name (numeric ids are ambiguous)" }
        return nil
    }

    /// Parses `USER[:GROUP]` and looks both names up in `accounts`; without a group, the user's
    /// primary group. Fails with a message that names what is wrong and what to do.
    public static func parse(_ text: String, accounts: any AccountDatabase = SystemAccounts()) -> Result<NodeOwner, BindingError> {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let userName = parts[0]
        if let problem = nameProblem(userName) { return .failure(.owner("the user name \"\(userName)\" \(problem)")) }
        guard let user = accounts.user(named: userName) else {
            return .failure(.owner("there is no user \"\(userName)\" on this host (getpwnam found none); create it (useradd --system \(userName)) or name the VMM's user"))
        }
        if parts.count == 2 {
            let groupName = parts[1]
            if let problem = nameProblem(groupName) { return .failure(.owner("the group name \"\(groupName)\" \(problem)")) }
            guard let gid = accounts.group(named: groupName) else {
                return .failure(.owner("there is no group \"\(groupName)\" on this host (getgrnam found none); create it (groupadd \(groupName)) or leave it out to use \(userName)'s own group"))
            }
            return .success(NodeOwner(user: userName, uid: user.uid, group: groupName, gid: gid))
        }
        let groupName = accounts.groupName(id: user.gid) ?? String(user.gid)
        return .success(NodeOwner(user: userName, uid: user.uid, group: groupName, gid: user.gid))
    }
}

/// Where user and group names are looked up.
public protocol AccountDatabase {
    /// The user's id and primary group id; nil when there is no such user.
    func user(named name: String) -> (uid: UInt32, gid: UInt32)?
    /// The group's id; nil when there is no such group.
    func group(named name: String) -> UInt32?
    /// The name of group `id`; nil when it has none.
    func groupName(id: UInt32) -> String?
}

/// This host's accounts, through the C library (getpwnam_r, getgrnam_r, getgrgid_r: files, LDAP
/// or whatever nsswitch.conf names).
public struct SystemAccounts: AccountDatabase {
    /// The system's account database.
    public init() {}

    /// getpwnam_r with a buffer that grows on ERANGE (bounded).
    public func user(named name: String) -> (uid: UInt32, gid: UInt32)? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var size = 1024
        while size <= 1 << 20 {
            var buffer = [CChar](repeating: 0, count: size)
            let status = getpwnam_r(name, &entry, &buffer, size, &result)
            if status == ERANGE { size *= 4; continue }
            guard status == 0, result != nil else { return nil }
            return (entry.pw_uid, entry.pw_gid)
        }
        return nil
    }

    /// getgrnam_r with a buffer that grows on ERANGE (bounded).
    public func group(named name: String) -> UInt32? {
        var entry = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var size = 1024
        while size <= 1 << 20 {
            var buffer = [CChar](repeating: 0, count: size)
            let status = getgrnam_r(name, &entry, &buffer, size, &result)
            if status == ERANGE { size *= 4; continue }
            guard status == 0, result != nil else { return nil }
            return entry.gr_gid
        }
        return nil
    }

    /// getpwuid_r with a buffer that grows on ERANGE (bounded): the name of user `id`.
    public func userName(id: UInt32) -> String? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var size = 1024
        while size <= 1 << 20 {
            var buffer = [CChar](repeating: 0, count: size)
            let status = getpwuid_r(id, &entry, &buffer, size, &result)
            if status == ERANGE { size *= 4; continue }
            guard status == 0, result != nil, let name = entry.pw_name else { return nil }
            return String(cString: name)
        }
        return nil
    }

    /// getgrgid_r with a buffer that grows on ERANGE (bounded).
    public func groupName(id: UInt32) -> String? {
        var entry = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var size = 1024
        while size <= 1 << 20 {
            var buffer = [CChar](repeating: 0, count: size)
            let status = getgrgid_r(id, &entry, &buffer, size, &result)
            if status == ERANGE { size *= 4; continue }
            guard status == 0, result != nil, let name = entry.gr_name else { return nil }
            return String(cString: name)
        }
        return nil
    }
}

/// Gives a device's VFIO nodes (its group's /dev/vfio/N, and its device file
/// /dev/vfio/devices/vfioN where the kernel makes one) to an owner, mode 0600.
public struct VFIONodeOwnership {
    /// Where device nodes are (/dev).
    public let devRoot: String

    /// Nodes under `devRoot`.
    public init(devRoot: String = "/dev") { self.devRoot = devRoot }

    /// The nodes of a device in `group` whose sysfs directory is `deviceDirectory`: the group
    /// node and, where the device has one now, its device file. Only those that exist.
    public func nodes(group: Int, deviceDirectory: String?) -> [String] {
        var paths = [devRoot + "/vfio/\(group)"]
        if let deviceDirectory, let name = try? VFIODeviceFileName.read(deviceDirectory: deviceDirectory) {
            paths.append(devRoot + "/vfio/devices/" + name)
        }
        return paths.filter { path in
            var status = stat()
            return lstat(path, &status) == 0
        }
    }

    /// Gives each node to `owner` with mode 0600. Each must be a character device (never a link
    /// or a file put there) in a directory only root (or this process's user) can change, so
    /// nothing can swap the entry between the check and the change. Stops at the first failure
    /// with the nodes already changed named.
    public func give(_ paths: [String], to owner: NodeOwner) throws(BindingError) {
        var done: [String] = []
        for path in paths {
            var status = stat()
            guard lstat(path, &status) == 0 else {
                throw .owner("cannot give \(path) to \(owner): \(String(cString: strerror(errno)))" + Self.doneNote(done))
            }
            guard status.st_mode & S_IFMT == S_IFCHR else {
                throw .owner("\(path) is not a character device (\(SafeFile.kindName(status.st_mode))); vfioctl changes the owner of VFIO device nodes only" + Self.doneNote(done))
            }
            let parent = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
            var parentStatus = stat()
            guard lstat(parent.isEmpty ? "/" : parent, &parentStatus) == 0, parentStatus.st_mode & S_IFMT == S_IFDIR,
                  parentStatus.st_uid == 0 || parentStatus.st_uid == geteuid(), parentStatus.st_mode & 0o022 == 0 else {
                throw .owner("\(parent) is not a directory that only root can change; vfioctl leaves \(path) alone" + Self.doneNote(done))
            }
            // The owner first, then the mode: in between the node is 0600 of one owner or the
            // other (the kernel's mode), never open to anyone else.
            guard lchown(path, owner.uid, owner.gid) == 0 else {
                throw .owner("chown \(owner) \(path) failed: \(String(cString: strerror(errno)))" + Self.doneNote(done))
            }
            guard chmod(path, NodeOwner.mode) == 0 else {
                throw .owner("chmod 0600 \(path) failed: \(String(cString: strerror(errno)))" + Self.doneNote(done))
            }
            done.append(path)
        }
    }

    static func doneNote(_ done: [String]) -> String {
        done.isEmpty ? "" : " (already changed: \(done.joined(separator: ", ")))"
    }

    /// The owner, group and mode of a node; nil when it does not exist.
    public static func status(of path: String) -> (uid: UInt32, gid: UInt32, mode: UInt32)? {
        var status = stat()
        guard lstat(path, &status) == 0 else { return nil }
        return (status.st_uid, status.st_gid, UInt32(status.st_mode & 0o7777))
    }
}
