#ifndef CLINUXUAPI_H
#define CLINUXUAPI_H
// The kernel's VFIO and KVM uapi for Swift. Plain integer #defines and the structs are imported
// by Swift directly from the kernel headers; the ioctl request numbers are function-like macros
// (_IO, _IOW, ...) that Swift cannot import, so they are re-exported here as constants computed
// by the C compiler from the headers themselves. No number is typed by hand.
#include <linux/vfio.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <stdint.h>

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
#endif
