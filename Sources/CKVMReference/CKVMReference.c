#include "CKVMReference.h"
#include <errno.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <time.h>

uint64_t ckvm_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int ckvm_create_vm(int kvm_fd) {
    int fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
    return fd < 0 ? -errno : fd;
}

static int set_region(int vm_fd, uint32_t slot, uint64_t gpa, uint64_t size, uint64_t host, uint64_t *elapsed) {
    struct kvm_userspace_memory_region region = {
        .slot = slot, .flags = 0, .guest_phys_addr = gpa, .memory_size = size, .userspace_addr = host,
    };
    uint64_t start = ckvm_now_ns();
    int rc = ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &region);
    *elapsed = ckvm_now_ns() - start;
    return rc < 0 ? -errno : 0;
}

int ckvm_memslot_pattern(int vm_fd, uint64_t host_base, int n,
                         uint64_t *add_ns, uint64_t *move_ns, uint64_t *delete_ns) {
    const uint64_t page = 4096;
    int rc;
    for (int i = 0; i < n; i++)
        if ((rc = set_region(vm_fd, i, i * 2 * page, page, host_base + i * page, &add_ns[i]))) return rc;
    for (int i = 0; i < n; i++)
        if ((rc = set_region(vm_fd, i, i * 2 * page + page, page, host_base + i * page, &move_ns[i]))) return rc;
    for (int i = 0; i < n; i++)
        if ((rc = set_region(vm_fd, i, 0, 0, host_base + i * page, &delete_ns[i]))) return rc;
    return 0;
}
