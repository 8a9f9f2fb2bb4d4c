#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
@testable import PCIBinding

@Suite struct BoundedWriteTests {
    let directory: String = {
        let path = NSTemporaryDirectory() + "vfioctl-bounded-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    @Test func writesTheValueVerbatim() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/unbind"
        let descriptor = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        #expect(descriptor >= 0)
        defer { close(descriptor) }
        // Shell metacharacters in the value stay data.
        let value = "0000:01:00.0; $(touch \(directory)/pwned) `x` \"q\""
        #expect(BoundedWrite.write(value, descriptor: descriptor, timeout: 5) == .written)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == value)
        #expect(!FileManager.default.fileExists(atPath: directory + "/pwned"))
    }

    @Test func aFailedWriteSaysWhy() {
        // /dev/full fails every write (ENOSPC), as an attribute fails a value the kernel refuses.
        let descriptor = open("/dev/full", O_WRONLY | O_CLOEXEC)
        #expect(descriptor >= 0)
        defer { close(descriptor) }
        guard case .failed(let reason) = BoundedWrite.write("x", descriptor: descriptor, timeout: 5) else {
            Issue.record("a write to /dev/full did not fail")
            return
        }
        #expect(!reason.isEmpty)
    }

    /// A pipe whose buffer is full blocks the writer, as a driver's remove blocks the unbind.
    @Test func aWriteThatBlocksIsLeftPendingAfterTheTimeout() throws {
        var ends: [Int32] = [-1, -1]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        // Fill it without blocking this thread, then hand the (blocking) write end to the child.
        #expect(fcntl(ends[1], F_SETFL, O_NONBLOCK) == 0)
        let filler = [UInt8](repeating: 0x2e, count: 4096)
        var queued = 0
        while true {
            let count = filler.withUnsafeBytes { write(ends[1], $0.baseAddress, $0.count) }
            if count <= 0 { break }
            queued += count
        }
        #expect(fcntl(ends[1], F_SETFL, 0) == 0)
        let started = Date()
        let result = BoundedWrite.write("0000:00:05.0", descriptor: ends[1], timeout: 0.3)
        let elapsed = Date().timeIntervalSince(started)
        guard case .pending(let helper) = result else {
            Issue.record("expected pending, got \(result)")
            return
        }
        #expect(elapsed >= 0.3 && elapsed < 3)
        // Letting go completes the write the helper still holds.
        // Non-blocking reads: this test holds the write end too, so an empty pipe never ends.
        #expect(fcntl(ends[0], F_SETFL, O_NONBLOCK) == 0)
        var bytes = [UInt8](repeating: 0, count: 65536)
        var got: [UInt8] = []
        var status: Int32 = 0
        let deadline = Date().addingTimeInterval(10)
        while waitpid(helper, &status, WNOHANG) != helper && Date() < deadline {
            let count = bytes.withUnsafeMutableBytes { read(ends[0], $0.baseAddress, $0.count) }
            if count > 0 { got += bytes[..<count] } else { usleep(1000) }
        }
        while true {
            let count = bytes.withUnsafeMutableBytes { read(ends[0], $0.baseAddress, $0.count) }
            if count <= 0 { break }
            got += bytes[..<count]
        }
        #expect(got.count == queued + 12)
        #expect(String(decoding: got.suffix(12), as: UTF8.self) == "0000:00:05.0")
    }

    /// The driver_override read: the bytes of an open attribute, refused past the limit.
    @Test func readsAnOpenFileUpToTheLimit() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/driver_override"
        try "vfio-pci\n".write(toFile: path, atomically: false, encoding: .utf8)
        let descriptor = open(path, O_RDONLY)
        #expect(descriptor >= 0)
        defer { close(descriptor) }
        #expect(BoundedWrite.read(descriptor, limit: 64, timeout: 5) == .read(Array("vfio-pci\n".utf8)))
        #expect(lseek(descriptor, 0, SEEK_SET) == 0)
        #expect(BoundedWrite.read(descriptor, limit: 4, timeout: 5) == .failed("larger than 4 bytes"))
    }

    /// A read that blocks (a FIFO with a writer that never writes, as a show waits for the
    /// device lock) is left to its child after the timeout.
    @Test func aReadThatBlocksIsLeftPendingAfterTheTimeout() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fifo = directory + "/override"
        #expect(mkfifo(fifo, 0o600) == 0)
        let descriptor = open(fifo, O_RDWR)
        #expect(descriptor >= 0)
        let started = Date()
        let result = BoundedWrite.read(descriptor, limit: 64, timeout: 0.3)
        #expect(Date().timeIntervalSince(started) >= 0.3)
        guard case .pending(let helper) = result else {
            Issue.record("expected pending, got \(result)")
            close(descriptor)
            return
        }
        close(descriptor)
        // SIGTERM: the helper must not inherit the test thread's blocked signals.
        kill(helper, SIGTERM)
        var status: Int32 = 0
        var reaped = false
        for _ in 0..<300 where !reaped {
            if waitpid(helper, &status, WNOHANG) == helper { reaped = true } else { usleep(10_000) }
        }
        if !reaped { kill(helper, SIGKILL); _ = waitpid(helper, &status, 0) }
        #expect(reaped, "SIGTERM did not end the helper")
    }

    /// The live writer writes only beneath its root: an attribute that is a symlink out of the
    /// root, a FIFO or a directory is refused at once and nothing outside changes.
    @Test func theKernelWriterStaysBeneathItsRoot() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let root = directory + "/sys", outside = directory + "/outside"
        try FileManager.default.createDirectory(atPath: root + "/bus/pci", withIntermediateDirectories: true)
        try "IMPORTANT\n".write(toFile: outside, atomically: false, encoding: .utf8)
        try "".write(toFile: root + "/bus/pci/drivers_probe", atomically: false, encoding: .utf8)
        #expect(symlink(outside, root + "/bus/pci/rescan") == 0)
        #expect(mkfifo(root + "/bus/pci/fifo", 0o600) == 0)
        let writer = KernelSysfsWriter(root: root)
        try writer.write("0000:01:00.0", to: root + "/bus/pci/drivers_probe", timeout: 5)
        #expect(try String(contentsOfFile: root + "/bus/pci/drivers_probe", encoding: .utf8) == "0000:01:00.0")
        for (path, reason) in [("rescan", "outside its root"), ("fifo", "FIFO"), ("", "irectory")] {
            let started = Date()
            do {
                try writer.write("1", to: root + "/bus/pci/" + path, timeout: 5)
                Issue.record("\(path): written")
            } catch {
                #expect(error.description.contains(reason), "\(path): \(error)")
            }
            #expect(Date().timeIntervalSince(started) < 1)
        }
        do {
            try writer.write("1", to: outside, timeout: 5)
            Issue.record("a path outside the root was written")
        } catch {
            #expect(error.description.contains("not beneath"), "\(error)")
        }
        #expect(try String(contentsOfFile: outside, encoding: .utf8) == "IMPORTANT\n")
    }
}
