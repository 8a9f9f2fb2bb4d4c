#if canImport(Glibc)
import Glibc
#endif
import SystemCalls
import Testing

/// The two helpers HostKernel's reader takes from SystemCalls (so it no longer links PCIInventory).
@Suite struct SafeFileTextTests {
    /// A fresh scratch directory under /tmp.
    private func scratch() throws -> String {
        var template = Array("/tmp/vfioctl-safefile-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer in
            buffer.baseAddress.flatMap { mkdtemp($0) }
        }
        try #require(made != nil)
        return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func write(_ text: String, to path: String) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = text.utf8CString.withUnsafeBufferPointer { Glibc.write(descriptor, $0.baseAddress, $0.count - 1) }
        close(descriptor)
    }

    @Test func readsTrimmedTextAndRefusesWhatIsNotAFile() throws {
        let directory = try scratch()
        write("  always [madvise] never\n", to: directory + "/enabled")
        #expect(SafeFile.readTrimmedText(directory + "/enabled") == "always [madvise] never")
        write(" \n\t", to: directory + "/blank")
        #expect(SafeFile.readTrimmedText(directory + "/blank") == nil)
        #expect(SafeFile.readTrimmedText(directory + "/missing") == nil)
        #expect(SafeFile.readTrimmedText(directory) == nil, "a directory is not text")
        #expect(mkfifo(directory + "/fifo", 0o600) == 0)
        #expect(SafeFile.readTrimmedText(directory + "/fifo") == nil, "a FIFO is refused, never waited on")
        write(String(repeating: "x", count: 5000), to: directory + "/big")
        #expect(SafeFile.readTrimmedText(directory + "/big") == nil, "over the limit")
        #expect(SafeFile.readTrimmedText(directory + "/big", limit: 8192)?.count == 5000)
    }

    @Test func sameDirectoryMeansSameInode() throws {
        let directory = try scratch()
        #expect(symlink(directory, directory + ".link") == 0)
        defer { unlink(directory + ".link") }
        #expect(SafeFile.isSameDirectory(directory + ".link", directory))
        #expect(SafeFile.isSameDirectory("/tmp", "/tmp/"))
        #expect(!SafeFile.isSameDirectory(directory, "/tmp"))
        write("x", to: directory + "/file")
        #expect(!SafeFile.isSameDirectory(directory + "/file", directory + "/file"), "a file is not a directory")
        #expect(!SafeFile.isSameDirectory(directory + "/missing", directory + "/missing"))
    }
}
