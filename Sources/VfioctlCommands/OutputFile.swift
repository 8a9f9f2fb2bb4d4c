import Foundation
import SystemCalls

/// Where `--output PATH` options write: `-` is stdout; anything else must be a new name or a
/// regular file, replaced atomically (SafeFile): a device node, FIFO, symlink or directory is
/// refused, never replaced or written through.
enum OutputFile {
    /// Writes `bytes` to `path` (stdout for `-`); throws a `CommandFailure` that says what to do.
    static func write(_ bytes: [UInt8], to path: String, command: String) throws {
        if path == "-" {
            FileHandle.standardOutput.write(Data(bytes))
            return
        }
        do { try SafeFile.writeAtomically(bytes, to: path, mode: 0o644) } catch {
            throw CommandFailure("\(command): cannot write \(error.description) (give a new file name or a regular file; - writes to stdout)")
        }
    }
}
