#ifndef CKVMREFERENCE_H
#define CKVMREFERENCE_H
// Plain C doing the raw KVM ioctls that kvm-benchmark also does through vfioctl's KVM layer,
// in the same pattern, timed the same way, so the two can be compared in one run.
#include <stdint.h>

/// CLOCK_MONOTONIC in nanoseconds: the clock both sides time with.
uint64_t ckvm_now_ns(void);

/// Creates a VM on an open /dev/kvm descriptor; returns its fd, or -errno.
int ckvm_create_vm(int kvm_fd);

/// The memslot pattern, one KVM_SET_USER_MEMORY_REGION per step, each timed alone:
/// add slots 0..<n (slot i: 4 KiB at gpa i * 8 KiB, host host_base + i * 4 KiB), move each
/// to gpa + 4 KiB, delete each. Writes n durations in nanoseconds to each array.
/// Returns 0, or -errno of the first failing ioctl. Contract: host_base maps n * 4 KiB bytes,
/// and each array holds n elements.
int ckvm_memslot_pattern(int vm_fd, uint64_t host_base, int n,
                         uint64_t *add_ns, uint64_t *move_ns, uint64_t *delete_ns);
#endif
