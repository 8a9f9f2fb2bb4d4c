#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import VFIO

@Suite("MappedRegion lifetime")
struct MappedRegionLifetimeTests {
    /// A region DMA-mapped for peer-to-peer refuses an explicit unmap and stays mapped (the
    /// container holds its lease until the DMA is unmapped); without DMA it unmaps.
    @Test func unmapIsRefusedWhileDMAMapped() throws {
        let size = 4096
        guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), base != MAP_FAILED else {
            Issue.record("mmap failed")
            return
        }
        let region = MappedRegion(base: base, size: size, regionIndex: 2, writable: true)
        let lease = region.lease
        lease.dmaMappings = 1
        var refusal: VFIOError?
        do { try region.unmap() } catch { refusal = error }
        guard case .inUse? = refusal else {
            Issue.record("unmap of a DMA-mapped region was not refused: \(String(describing: refusal))")
            return
        }
        // Still mapped: the page can be written and read.
        base.storeBytes(of: 0x5a, as: UInt8.self)
        #expect(base.load(as: UInt8.self) == 0x5a)
        lease.dmaMappings = 0
        #expect(lease.release() == 0)

        guard let other = mmap(nil, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), other != MAP_FAILED else { return }
        let free = MappedRegion(base: other, size: size, regionIndex: 2, writable: false)
        try free.unmap()
    }
}
