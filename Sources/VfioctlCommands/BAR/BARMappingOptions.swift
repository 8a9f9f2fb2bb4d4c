import ArgumentParser
import BARPlacement
import HostKernel
import VFIO

/// `--offset` and `--length`: a window of a BAR, planned or mapped the way a sparse mmap area
/// that starts there would be (vfioctl places every area by its own bus address).
struct BARWindowOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Start of the window in the BAR (a multiple of 4096; 0x hex or K/M/G). Default: 0.", valueName: "bytes"))
    var offset: PageMultiple?
    @Option(name: .long, help: ArgumentHelp("Length of the window (a multiple of 4096, not 0). Default: to the end of the BAR.", valueName: "bytes"))
    var length: PageLength?

    var isSet: Bool { offset != nil || length != nil }

    /// A window chooses part of one BAR, so it needs one.
    func validate(bar: BARIndex?) throws {
        if isSet, bar == nil { throw ValidationError("--offset and --length need --bar: they choose a window of one BAR") }
    }

    struct OutOfRange: Error { let message: String }

    /// The window as (offset, length) inside a BAR of `barSize` bytes.
    func resolve(barSize: UInt64) throws(OutOfRange) -> (UInt64, UInt64) {
        let start = offset?.value ?? 0
        guard start < barSize else {
            throw OutOfRange(message: "--offset \(start.hex()) is not inside the BAR (\(barSize.hex()) bytes)")
        }
        let size = length?.value ?? (barSize - start)
        guard size <= barSize - start else {
            throw OutOfRange(message: "the window \(start.hex())+\(size.hex()) runs past the end of the BAR (\(barSize.hex()) bytes)")
        }
        return (start, size)
    }

    /// The window as the sparse area to map, nil for the whole BAR.
    func area(barSize: UInt64) throws(VFIOError) -> SparseArea? {
        guard isSet else { return nil }
        do {
            let (offset, length) = try resolve(barSize: barSize)
            return SparseArea(offset: offset, size: length)
        } catch { throw VFIOError.placement(error.message) }
    }
}

/// How `bar touch` and `dma bench-bar` map a BAR: which one, which window of it, moved how far
/// off vfioctl's placement, with or without MADV_HUGEPAGE.
struct BARMappingOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The BAR, 0-5.", valueName: "n"))
    var bar: BARIndex
    @Option(name: .long, help: ArgumentHelp("Bytes to move the mapping off vfioctl's placement (a multiple of 4096 below 128 TiB; 0x hex or K/M/G).", valueName: "bytes"))
    var skew: PageMultiple = .zero
    @OptionGroup var window: BARWindowOptions
    @Flag(name: .customLong("no-madvise"), help: "Map without MADV_HUGEPAGE, as QEMU maps BARs (vfioctl's library advises every BAR mapping).")
    var noMadvise = false

    var advice: MappingHugePageAdvice { noMadvise ? .none : .hugePage }

    func validate() throws { try window.validate(bar: bar) }
}
