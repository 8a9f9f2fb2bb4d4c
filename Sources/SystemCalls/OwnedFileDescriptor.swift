import SystemPackage

/// A file descriptor with exactly one owner, closed exactly once: in deinit, unless `take()`
/// hands it on. Being ~Copyable, it cannot be duplicated by accident, so a failed initializer
/// that drops it closes the descriptor with no hand-written close-on-failure block.
public struct OwnedFileDescriptor: ~Copyable {
    @usableFromInline
    let descriptor: FileDescriptor

    /// Takes ownership of `descriptor`: nothing else may close it.
    @inlinable
    public init(_ descriptor: FileDescriptor) {
        self.descriptor = descriptor
    }

    /// Takes ownership of a raw descriptor a system call returned (an ioctl that creates one, say).
    @inlinable
    public init(rawValue: Int32) {
        self.descriptor = FileDescriptor(rawValue: rawValue)
    }

    /// Opens `path`; the result owns the new descriptor.
    @inlinable
    public static func open<Failure: Error>(
        _ path: FilePath, _ mode: FileDescriptor.AccessMode, options: FileDescriptor.OpenOptions = [.closeOnExec],
        orThrow failure: (Errno) -> Failure
    ) throws(Failure) -> OwnedFileDescriptor {
        OwnedFileDescriptor(try SystemCall.mapping({ try FileDescriptor.open(path, mode, options: options) }, orThrow: failure))
    }

    /// The descriptor, borrowed: valid only while this owner lives; never close it.
    @inlinable
    public var borrowed: FileDescriptor { descriptor }

    /// The raw descriptor, borrowed like `borrowed`.
    @inlinable
    public var rawValue: Int32 { descriptor.rawValue }

    /// Ends this ownership without closing: the caller owns the descriptor from now on.
    public consuming func take() -> FileDescriptor {
        let descriptor = self.descriptor
        discard self
        return descriptor
    }

    deinit {
        // Linux releases the descriptor even when close reports an error (EINTR included), so
        // there is nothing to retry and nothing useful to throw from here.
        _ = try? descriptor.close()
    }
}
