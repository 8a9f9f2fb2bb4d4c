#if canImport(Glibc)
import Glibc
#endif
import SystemCalls
import SystemPackage
import Testing

/// A connected socket pair: whether one end is still open shows at the other (EPIPE), which
/// holds even if a test running in parallel reuses the closed descriptor's number.
private func makePair() -> (owned: Int32, peer: Int32)? {
    var ends: [Int32] = [-1, -1]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0 else { return nil }
    return (ends[0], ends[1])
}

/// Whether the socket at the other end of `peer` is still open.
private func peerIsOpen(_ peer: Int32) -> Bool {
    var byte: UInt8 = 0
    return send(peer, &byte, 1, Int32(MSG_NOSIGNAL)) == 1
}

private struct Failure: Error, Equatable {
    let code: Errno
}

@Suite("SystemCall")
struct SystemCallTests {
    /// EINTR is retried, any other errno is the caller's error, a result >= 0 is returned.
    @Test func retriesOnlyInterrupts() throws {
        var calls = 0
        let value = try SystemCall.value({ () -> Int32 in
            calls += 1
            if calls < 3 { errno = EINTR; return -1 }
            return 7
        }, orThrow: Failure.init)
        #expect(value == 7)
        #expect(calls == 3)

        calls = 0
        #expect(throws: Failure(code: .resourceBusy)) {
            try SystemCall.value({ () -> Int32 in
                calls += 1
                errno = EBUSY
                return -1
            }, orThrow: Failure.init)
        }
        #expect(calls == 1)
    }

    /// A SystemPackage error comes out as the caller's type with the same errno.
    @Test func mapsSystemPackageErrors() {
        #expect(throws: Failure(code: .badFileDescriptor)) {
            try SystemCall.mapping({ try FileDescriptor(rawValue: -1).close() }, orThrow: Failure.init)
        }
    }

    /// An ioctl on a descriptor that is not open fails with EBADF, typed.
    @Test func ioctlFailureIsTyped() {
        #expect(throws: Failure(code: .badFileDescriptor)) {
            try SystemCall.ioctl(FileDescriptor(rawValue: -1), 0, 0, orThrow: Failure.init)
        }
    }
}

@Suite("OwnedFileDescriptor")
struct OwnedFileDescriptorTests {
    /// Dropping the owner closes the descriptor.
    @Test func closesWhenDropped() throws {
        let ends = try #require(makePair())
        do {
            let owner = OwnedFileDescriptor(rawValue: ends.owned)
            #expect(owner.rawValue == ends.owned)
            #expect(peerIsOpen(ends.peer))
        }
        #expect(!peerIsOpen(ends.peer))
        close(ends.peer)
    }

    /// `take()` ends the ownership without closing (no second close later either): the caller
    /// closes, once.
    @Test func takeHandsTheDescriptorOn() throws {
        let ends = try #require(makePair())
        let taken: FileDescriptor
        do {
            let owner = OwnedFileDescriptor(rawValue: ends.owned)
            taken = owner.take()
        }
        #expect(taken.rawValue == ends.owned)
        #expect(peerIsOpen(ends.peer))
        try taken.close()
        #expect(!peerIsOpen(ends.peer))
        close(ends.peer)
    }

    /// A failed initializer drops what it owns, so its descriptor closes with no cleanup code;
    /// a successful one keeps it until the object goes.
    @Test func failedInitializerCloses() throws {
        final class Holder {
            let owned: OwnedFileDescriptor
            init(_ fd: Int32, fail: Bool) throws(Failure) {
                let owned = OwnedFileDescriptor(rawValue: fd)
                if fail { throw Failure(code: .invalidArgument) }
                self.owned = owned
            }
        }
        let first = try #require(makePair())
        #expect(throws: Failure(code: .invalidArgument)) { try Holder(first.owned, fail: true) }
        #expect(!peerIsOpen(first.peer))
        close(first.peer)

        let second = try #require(makePair())
        var holder: Holder? = try Holder(second.owned, fail: false)
        #expect(peerIsOpen(second.peer))
        #expect(holder?.owned.rawValue == second.owned)
        holder = nil
        #expect(!peerIsOpen(second.peer))
        close(second.peer)
    }

    /// `open` reports a missing path with the caller's error type.
    @Test func openFailureIsTyped() {
        #expect(throws: Failure(code: .noSuchFileOrDirectory)) {
            _ = try OwnedFileDescriptor.open("/nonexistent/vfioctl-test", .readOnly, orThrow: Failure.init)
        }
    }
}
