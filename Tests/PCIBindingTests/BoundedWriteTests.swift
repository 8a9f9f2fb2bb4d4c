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
        // Shell metacharacters in the value stay data.
        let value = "0000:01:00.0; $(touch \(directory)/pwned) `x` \"q\""
        #expect(BoundedWrite.write(value, to: path, timeout: 5) == .written)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == value)
        #expect(!FileManager.default.fileExists(atPath: directory + "/pwned"))
    }

    @Test func aFailedWriteSaysWhy() {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        guard case .failed(let reason) = BoundedWrite.write("x", to: directory + "/missing/unbind", timeout: 5) else {
            Issue.record("a write into a missing directory did not fail")
            return
        }
        #expect(reason.contains("No such file") || reason.contains("nonexistent"), "\(reason)")
    }

    /// A FIFO without a reader blocks the writer's open, as a driver's remove blocks the unbind.
    @Test func aWriteThatBlocksIsLeftPendingAfterTheTimeout() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fifo = directory + "/blocking"
        #expect(mkfifo(fifo, 0o600) == 0)
        let started = Date()
        let result = BoundedWrite.write("0000:00:05.0", to: fifo, timeout: 0.3)
        let elapsed = Date().timeIntervalSince(started)
        guard case .pending(let helper) = result else {
            Issue.record("expected pending, got \(result)")
            return
        }
        #expect(elapsed >= 0.3 && elapsed < 3)
        // Letting go completes the write the helper still holds.
        let reader = open(fifo, O_RDONLY)
        #expect(reader >= 0)
        var bytes = [UInt8](repeating: 0, count: 64)
        var got: [UInt8] = []
        while true {
            let count = bytes.withUnsafeMutableBytes { read(reader, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            got += bytes[..<count]
        }
        close(reader)
        var status: Int32 = 0
        #expect(waitpid(helper, &status, 0) == helper)
        #expect(String(decoding: got, as: UTF8.self) == "0000:00:05.0")
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
}
