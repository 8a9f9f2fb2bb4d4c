#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxUAPI
import SystemPackage

/// A device region mapped into this process with mmap. Not copyable, so the mapping has exactly
/// one owner: it is unmapped exactly once, by `unmap()` or else when the owner lets it go.
/// Loads and stores are single volatile accesses of the given width (see CLinuxUAPI's
/// cuapi_mmio_*), checked against the mapping's bounds and natural alignment.
public struct MappedRegion: ~Copyable {
    /// Start of the mapping; page aligned.
    public let base: UnsafeMutableRawPointer
    public let size: Int
    public let regionIndex: UInt32
    public let isWritable: Bool

    init(base: UnsafeMutableRawPointer, size: Int, regionIndex: UInt32, writable: Bool) {
        self.base = base
        self.size = size
        self.regionIndex = regionIndex
        self.isWritable = writable
    }

    deinit {
        // Safety: base/size are exactly what mmap returned, and only this owner unmaps them.
        _ = munmap(base, size)
    }

    /// Unmaps now and reports a failure, which deinit cannot.
    public consuming func unmap() throws(VFIOError) {
        let base = self.base, size = self.size, index = self.regionIndex
        discard self
        // Safety: as in deinit; `discard` ensures deinit will not unmap a second time.
        guard munmap(base, size) == 0 else {
            throw .system(operation: "munmap of region \(index)", errno: Errno(rawValue: errno))
        }
    }

    /// One load of `width` bytes at `offset`.
    public func load(_ width: AccessWidth, at offset: Int) throws(VFIOError) -> UInt64 {
        let pointer = try checked(offset, width)
        // Safety: `checked` proved the access lies inside the live mapping and is aligned.
        switch width {
        case .byte: return UInt64(cuapi_mmio_read8(pointer))
        case .word: return UInt64(cuapi_mmio_read16(pointer))
        case .dword: return UInt64(cuapi_mmio_read32(pointer))
        case .qword: return cuapi_mmio_read64(pointer)
        }
    }

    /// One store of the low `width` bytes of `value` at `offset`.
    public func store(_ value: UInt64, _ width: AccessWidth, at offset: Int) throws(VFIOError) {
        guard isWritable else { throw .regionAccessDenied(index: regionIndex, access: "write (mapped read-only)") }
        guard value & ~width.mask == 0 else { throw .outOfRange(offset: value, width: width.rawValue, size: width.mask) }
        let pointer = try checked(offset, width)
        // Safety: as in load; the mapping is writable.
        switch width {
        case .byte: cuapi_mmio_write8(pointer, UInt8(truncatingIfNeeded: value))
        case .word: cuapi_mmio_write16(pointer, UInt16(truncatingIfNeeded: value))
        case .dword: cuapi_mmio_write32(pointer, UInt32(truncatingIfNeeded: value))
        case .qword: cuapi_mmio_write64(pointer, value)
        }
    }

    public func load8(at offset: Int) throws(VFIOError) -> UInt8 { UInt8(truncatingIfNeeded: try load(.byte, at: offset)) }
    public func load16(at offset: Int) throws(VFIOError) -> UInt16 { UInt16(truncatingIfNeeded: try load(.word, at: offset)) }
    public func load32(at offset: Int) throws(VFIOError) -> UInt32 { UInt32(truncatingIfNeeded: try load(.dword, at: offset)) }
    public func load64(at offset: Int) throws(VFIOError) -> UInt64 { try load(.qword, at: offset) }
    public func store8(_ value: UInt8, at offset: Int) throws(VFIOError) { try store(UInt64(value), .byte, at: offset) }
    public func store16(_ value: UInt16, at offset: Int) throws(VFIOError) { try store(UInt64(value), .word, at: offset) }
    public func store32(_ value: UInt32, at offset: Int) throws(VFIOError) { try store(UInt64(value), .dword, at: offset) }
    public func store64(_ value: UInt64, at offset: Int) throws(VFIOError) { try store(value, .qword, at: offset) }

    private func checked(_ offset: Int, _ width: AccessWidth) throws(VFIOError) -> UnsafeMutableRawPointer {
        guard offset >= 0, offset <= size, width.rawValue <= size - offset else {
            throw .outOfRange(offset: UInt64(clamping: offset), width: width.rawValue, size: UInt64(size))
        }
        guard offset % width.rawValue == 0 else { throw .misaligned(offset: UInt64(offset), width: width.rawValue) }
        return base + offset
    }
}
