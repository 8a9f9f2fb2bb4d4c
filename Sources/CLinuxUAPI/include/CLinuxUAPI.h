#ifndef CLINUXUAPI_H
#define CLINUXUAPI_H
// The kernel's VFIO and KVM uapi for Swift. Plain integer #defines and the structs are imported
// by Swift directly from the kernel headers; the ioctl request numbers are function-like macros
// (_IO, _IOW, ...) that Swift cannot import, so they are re-exported here as constants computed
// by the C compiler from the headers themselves. No number is typed by hand.
//
// linux/vfio.h and linux/iommufd.h are the kernel 7.3.4 uapi, vendored under uapi-7.3.4/ (see the
// README there): the build host's 6.1 headers lack iommufd and VFIO's device-file calls. They
// come first so the system's older <linux/vfio.h> (the same VFIO_H include guard) is never read.
#include <linux/stddef.h>
// 7.3's vfio.h marks a flexible array with __counted_by, which 6.1's linux/stddef.h lacks; it is
// only an annotation for the compiler's bounds checks.
#ifndef __counted_by
#define __counted_by(member)
#endif
#include "uapi-7.3.4/linux/vfio.h"
#include "uapi-7.3.4/linux/iommufd.h"
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/memfd.h>
#include <stdint.h>
#include <sys/prctl.h>

// PR_GET_THP_DISABLE's "disabled except where advised" flag: in the uapi header from Linux 6.18;
// older installed headers lack it, and the kernel's value is what a newer kernel answers with.
#ifndef PR_THP_DISABLE_EXCEPT_ADVISED
#define PR_THP_DISABLE_EXCEPT_ADVISED (1 << 1)
#endif
static const int CPR_THP_DISABLE_EXCEPT_ADVISED = PR_THP_DISABLE_EXCEPT_ADVISED;

// Field offsets of a dirty-ring entry, from the compiler (Swift's MemoryLayout.offset(of:) is
// optional for imported C fields).
#include <stddef.h>
static const size_t CKVM_DIRTY_GFN_FLAGS_OFFSET = offsetof(struct kvm_dirty_gfn, flags);
static const size_t CKVM_DIRTY_GFN_SLOT_OFFSET = offsetof(struct kvm_dirty_gfn, slot);
static const size_t CKVM_DIRTY_GFN_OFFSET_OFFSET = offsetof(struct kvm_dirty_gfn, offset);
// prctl is variadic, which Swift cannot call. Returns prctl's result (-1 with errno on failure).
static inline int cuapi_get_thp_disable(void) { return prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0); }
static inline int cuapi_set_thp_disable(unsigned long disable, unsigned long flags) {
    return prctl(PR_SET_THP_DISABLE, disable, flags, 0, 0);
}

// MARK: VFIO container
static const unsigned long CVFIO_GET_API_VERSION = VFIO_GET_API_VERSION;
static const unsigned long CVFIO_CHECK_EXTENSION = VFIO_CHECK_EXTENSION;
static const unsigned long CVFIO_SET_IOMMU = VFIO_SET_IOMMU;
static const unsigned long CVFIO_IOMMU_GET_INFO = VFIO_IOMMU_GET_INFO;
static const unsigned long CVFIO_IOMMU_MAP_DMA = VFIO_IOMMU_MAP_DMA;
static const unsigned long CVFIO_IOMMU_UNMAP_DMA = VFIO_IOMMU_UNMAP_DMA;
// MARK: VFIO group
static const unsigned long CVFIO_GROUP_GET_STATUS = VFIO_GROUP_GET_STATUS;
static const unsigned long CVFIO_GROUP_SET_CONTAINER = VFIO_GROUP_SET_CONTAINER;
static const unsigned long CVFIO_GROUP_UNSET_CONTAINER = VFIO_GROUP_UNSET_CONTAINER;
static const unsigned long CVFIO_GROUP_GET_DEVICE_FD = VFIO_GROUP_GET_DEVICE_FD;
// MARK: VFIO device
static const unsigned long CVFIO_DEVICE_GET_INFO = VFIO_DEVICE_GET_INFO;
static const unsigned long CVFIO_DEVICE_GET_REGION_INFO = VFIO_DEVICE_GET_REGION_INFO;
static const unsigned long CVFIO_DEVICE_GET_IRQ_INFO = VFIO_DEVICE_GET_IRQ_INFO;
static const unsigned long CVFIO_DEVICE_SET_IRQS = VFIO_DEVICE_SET_IRQS;
static const unsigned long CVFIO_DEVICE_RESET = VFIO_DEVICE_RESET;
static const unsigned long CVFIO_DEVICE_GET_PCI_HOT_RESET_INFO = VFIO_DEVICE_GET_PCI_HOT_RESET_INFO;
static const unsigned long CVFIO_DEVICE_PCI_HOT_RESET = VFIO_DEVICE_PCI_HOT_RESET;
static const unsigned long CVFIO_DEVICE_FEATURE = VFIO_DEVICE_FEATURE;
static const unsigned int CVFIO_DEVICE_FEATURE_SET = VFIO_DEVICE_FEATURE_SET;
static const unsigned int CVFIO_DEVICE_FEATURE_PCI_VF_TOKEN = VFIO_DEVICE_FEATURE_PCI_VF_TOKEN;
static const unsigned int CVFIO_DEVICE_FEATURE_GET = VFIO_DEVICE_FEATURE_GET;
static const unsigned int CVFIO_DEVICE_FEATURE_DMA_BUF = VFIO_DEVICE_FEATURE_DMA_BUF;
// MARK: VFIO device file (cdev, /dev/vfio/devices/vfioN) with iommufd
static const unsigned long CVFIO_DEVICE_BIND_IOMMUFD = VFIO_DEVICE_BIND_IOMMUFD;
static const unsigned long CVFIO_DEVICE_ATTACH_IOMMUFD_PT = VFIO_DEVICE_ATTACH_IOMMUFD_PT;
static const unsigned long CVFIO_DEVICE_DETACH_IOMMUFD_PT = VFIO_DEVICE_DETACH_IOMMUFD_PT;
static const uint32_t CVFIO_DEVICE_BIND_FLAG_TOKEN = VFIO_DEVICE_BIND_FLAG_TOKEN;
static const size_t CVFIO_DEVICE_FEATURE_DATA_OFFSET = offsetof(struct vfio_device_feature, data);
static const size_t CVFIO_DEVICE_FEATURE_DMA_BUF_RANGES_OFFSET = offsetof(struct vfio_device_feature_dma_buf, dma_ranges);
// MARK: iommufd (/dev/iommu)
static const unsigned long CIOMMU_DESTROY = IOMMU_DESTROY;
static const unsigned long CIOMMU_IOAS_ALLOC = IOMMU_IOAS_ALLOC;
static const unsigned long CIOMMU_IOAS_IOVA_RANGES = IOMMU_IOAS_IOVA_RANGES;
static const unsigned long CIOMMU_IOAS_ALLOW_IOVAS = IOMMU_IOAS_ALLOW_IOVAS;
static const unsigned long CIOMMU_IOAS_MAP = IOMMU_IOAS_MAP;
static const unsigned long CIOMMU_IOAS_MAP_FILE = IOMMU_IOAS_MAP_FILE;
static const unsigned long CIOMMU_IOAS_UNMAP = IOMMU_IOAS_UNMAP;
static const uint32_t CIOMMU_IOAS_MAP_FIXED_IOVA = IOMMU_IOAS_MAP_FIXED_IOVA;
static const uint32_t CIOMMU_IOAS_MAP_WRITEABLE = IOMMU_IOAS_MAP_WRITEABLE;
static const uint32_t CIOMMU_IOAS_MAP_READABLE = IOMMU_IOAS_MAP_READABLE;
static const size_t CIOMMU_IOAS_IOVA_RANGES_HEAD_SIZE = sizeof(struct iommu_ioas_iova_ranges);
static const size_t CIOMMU_IOVA_RANGE_SIZE = sizeof(struct iommu_iova_range);

// MARK: KVM system and VM
static const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
static const unsigned long CKVM_ENABLE_CAP = KVM_ENABLE_CAP;
static const unsigned long CKVM_GET_DIRTY_LOG = KVM_GET_DIRTY_LOG;
static const unsigned long CKVM_CLEAR_DIRTY_LOG = KVM_CLEAR_DIRTY_LOG;
static const unsigned long CKVM_RESET_DIRTY_RINGS = KVM_RESET_DIRTY_RINGS;
// MARK: KVM vCPU
static const unsigned long CKVM_RUN = KVM_RUN;
static const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
static const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
static const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
// MARK: KVM interrupts (in-kernel irqchip, GSI routing, irqfd) and the KVM-VFIO device
static const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long CKVM_SET_GSI_ROUTING = KVM_SET_GSI_ROUTING;
static const unsigned long CKVM_IRQFD = KVM_IRQFD;
static const unsigned long CKVM_CREATE_DEVICE = KVM_CREATE_DEVICE;
static const unsigned long CKVM_SET_DEVICE_ATTR = KVM_SET_DEVICE_ATTR;
static const uint32_t CKVM_IRQFD_FLAG_DEASSIGN = KVM_IRQFD_FLAG_DEASSIGN;
static const uint32_t CKVM_IRQFD_FLAG_RESAMPLE = KVM_IRQFD_FLAG_RESAMPLE;
/// Where kvm_irq_routing's flexible entries[] array starts.
#include <stddef.h>
static const size_t CKVM_IRQ_ROUTING_ENTRIES_OFFSET = offsetof(struct kvm_irq_routing, entries);
/// Newer headers name the KVM-VFIO attributes FILE (a group or a device cdev); older ones only
/// GROUP, with the same values.
#ifdef KVM_DEV_VFIO_FILE
static const uint32_t CKVM_DEV_VFIO_FILE = KVM_DEV_VFIO_FILE;
static const uint64_t CKVM_DEV_VFIO_FILE_ADD = KVM_DEV_VFIO_FILE_ADD;
static const uint64_t CKVM_DEV_VFIO_FILE_DEL = KVM_DEV_VFIO_FILE_DEL;
#else
static const uint32_t CKVM_DEV_VFIO_FILE = KVM_DEV_VFIO_GROUP;
static const uint64_t CKVM_DEV_VFIO_FILE_ADD = KVM_DEV_VFIO_GROUP_ADD;
static const uint64_t CKVM_DEV_VFIO_FILE_DEL = KVM_DEV_VFIO_GROUP_DEL;
#endif
static const uint32_t CKVM_DEV_TYPE_VFIO = KVM_DEV_TYPE_VFIO;
// MARK: KVM x86 platform: the in-kernel PIT and the vCPUs' CPUID
static const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const uint32_t CKVM_PIT_SPEAKER_DUMMY = KVM_PIT_SPEAKER_DUMMY;
static const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
static const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
/// Where kvm_cpuid2's flexible entries[] array starts, and its count field.
static const size_t CKVM_CPUID2_ENTRIES_OFFSET = offsetof(struct kvm_cpuid2, entries);
static const size_t CKVM_CPUID2_NENT_OFFSET = offsetof(struct kvm_cpuid2, nent);
// MARK: KVM dirty ring entry flags (defined with _BITUL, which Swift cannot import)
static const uint32_t CKVM_DIRTY_GFN_F_DIRTY = KVM_DIRTY_GFN_F_DIRTY;
static const uint32_t CKVM_DIRTY_GFN_F_RESET = KVM_DIRTY_GFN_F_RESET;

/// ioctl(2) is variadic, which Swift cannot call. These pass the third argument as a pointer or
/// as an integer. They return ioctl's result; on -1 errno is set, as with ioctl itself.
/// Contract: `arg` must point to memory laid out as the kernel expects for `request`, valid for
/// the duration of the call.
static inline int cuapi_ioctl_ptr(int fd, unsigned long request, void *arg) {
    return ioctl(fd, request, arg);
}
static inline int cuapi_ioctl_int(int fd, unsigned long request, unsigned long arg) {
    return ioctl(fd, request, arg);
}
// MARK: memfd
/// memfd_create(2) through syscall(2): glibc declares it only under _GNU_SOURCE, which Swift's
/// Glibc module does not see. Returns the new descriptor, or -1 with errno set.
static const unsigned int CUAPI_MFD_CLOEXEC = MFD_CLOEXEC;
// openat2(2) (Linux 5.6+, no glibc wrapper on older glibc): open `path` relative to `dirfd`
// with `resolve` flags (RESOLVE_BENEATH: no component, symlinks included, may leave dirfd).
// Returns the descriptor, or -1 with errno set (ENOSYS on kernels without it).
#include <linux/openat2.h>
static inline int cuapi_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct open_how how = { .flags = flags, .mode = mode, .resolve = resolve };
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}
#include <fcntl.h>
// O_PATH is declared only under _GNU_SOURCE, which Swift's Glibc module does not see.
static const int CUAPI_O_PATH = __O_PATH;
static const uint64_t CUAPI_RESOLVE_BENEATH = RESOLVE_BENEATH;
static const uint64_t CUAPI_RESOLVE_NO_MAGICLINKS = RESOLVE_NO_MAGICLINKS;

static inline int cuapi_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}

// MARK: MMIO access
/// One load or store of exactly the given width through a volatile pointer, for device memory
/// mapped through VFIO: the compiler may not merge, split, repeat or drop it, which Swift's own
/// pointer loads do not promise. Contract: `p` is naturally aligned for the width and points
/// into a live mapping.
static inline uint8_t cuapi_mmio_read8(const void *p) { return *(const volatile uint8_t *)p; }
static inline uint16_t cuapi_mmio_read16(const void *p) { return *(const volatile uint16_t *)p; }
static inline uint32_t cuapi_mmio_read32(const void *p) { return *(const volatile uint32_t *)p; }
static inline uint64_t cuapi_mmio_read64(const void *p) { return *(const volatile uint64_t *)p; }
static inline void cuapi_mmio_write8(void *p, uint8_t v) { *(volatile uint8_t *)p = v; }
static inline void cuapi_mmio_write16(void *p, uint16_t v) { *(volatile uint16_t *)p = v; }
static inline void cuapi_mmio_write32(void *p, uint32_t v) { *(volatile uint32_t *)p = v; }
static inline void cuapi_mmio_write64(void *p, uint64_t v) { *(volatile uint64_t *)p = v; }
// MARK: eventfd (for VFIO interrupts)
#include <sys/eventfd.h>
static const int CUAPI_EFD_CLOEXEC = EFD_CLOEXEC;
/// eventfd(2); returns the new descriptor or -1 with errno set.
static inline int cuapi_eventfd(unsigned int initial, int flags) { return eventfd(initial, flags); }
// MARK: VFIO info flags as typed constants
static const uint32_t CVFIO_REGION_INFO_FLAG_CAPS = VFIO_REGION_INFO_FLAG_CAPS;
static const uint32_t CVFIO_IOMMU_INFO_CAPS = VFIO_IOMMU_INFO_CAPS;
// MARK: RLIMIT_MEMLOCK (what VFIO may pin for DMA)
#include <sys/resource.h>
/// getrlimit(RLIMIT_MEMLOCK); an unlimited value reads as UINT64_MAX. Returns 0 or -1 (errno).
static inline int cuapi_memlock_limit(uint64_t *current, uint64_t *maximum) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_MEMLOCK, &limit) != 0) return -1;
    *current = limit.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)limit.rlim_cur;
    *maximum = limit.rlim_max == RLIM_INFINITY ? UINT64_MAX : (uint64_t)limit.rlim_max;
    return 0;
}

// MARK: CAP_IPC_LOCK (the kernel exempts its holder from RLIMIT_MEMLOCK when VFIO pins pages)
#include <linux/capability.h>
/// Whether the calling thread has `capability` in its effective set: 1, 0, or -1 (errno).
static inline int cuapi_has_effective_capability(int capability) {
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &header, data) != 0) return -1;
    if (capability < 0 || capability >= 32 * _LINUX_CAPABILITY_U32S_3) return 0;
    return (data[capability / 32].effective >> (capability % 32)) & 1;
}
static const int CUAPI_CAP_IPC_LOCK = CAP_IPC_LOCK;

// MARK: PCI configuration space (linux/pci_regs.h): register offsets, bits, capability IDs
#include <linux/pci_regs.h>
// MARK: hugetlb page sizes for mmap (linux/mman.h): the page size's log2 sits at MAP_HUGE_SHIFT.
// Defined in uapi.c, which includes linux/mman.h: in this header its MAP_* macros would clash
// with glibc's in Swift (two modules defining MAP_NORESERVE and the rest).
extern const int CUAPI_MAP_HUGE_SHIFT;
extern const int CUAPI_MAP_HUGE_2MB;
extern const int CUAPI_MAP_HUGE_1GB;

// MARK: field offsets the kernel fixes (Swift's MemoryLayout.offset(of:) is optional for
// imported C fields, and a flexible array member has no Swift field at all)
static const size_t CVFIO_IRQ_SET_DATA_OFFSET = offsetof(struct vfio_irq_set, data);
static const size_t CVFIO_REGION_INFO_CAP_OFFSET_OFFSET = offsetof(struct vfio_region_info, cap_offset);
static const size_t CVFIO_IOMMU_TYPE1_INFO_CAP_OFFSET_OFFSET = offsetof(struct vfio_iommu_type1_info, cap_offset);
static const size_t CKVM_IRQ_ROUTING_NR_OFFSET = offsetof(struct kvm_irq_routing, nr);
static const size_t CVFIO_PCI_HOT_RESET_GROUP_FDS_OFFSET = offsetof(struct vfio_pci_hot_reset, group_fds);
static const size_t CVFIO_PCI_HOT_RESET_INFO_DEVICES_OFFSET = offsetof(struct vfio_pci_hot_reset_info, devices);
/// The group_id (type1) / devid (iommufd) union of a hot-reset dependent device: Swift imports an
/// anonymous union's members as computed properties, which have no offset of their own.
static const size_t CVFIO_PCI_DEPENDENT_DEVICE_ID_OFFSET = offsetof(struct vfio_pci_dependent_device, group_id);

// MARK: device numbers (glibc's major()/minor() are macros Swift cannot import)
#include <sys/sysmacros.h>
static inline uint32_t cuapi_dev_major(uint64_t device) { return major(device); }
static inline uint32_t cuapi_dev_minor(uint64_t device) { return minor(device); }
#endif
