// dma-map-ref: the C reference for `vfioctl dma bench`. Raw VFIO ioctls, no library: open the
// container and group, set type1v2, allocate and touch a buffer the way vfioctl's DMABuffer
// does (hugetlb 1G/2M if reserved, else anonymous memory with MADV_HUGEPAGE), then time
// VFIO_IOMMU_MAP_DMA and VFIO_IOMMU_UNMAP_DMA at IOVA 2 MiB, best of N.
//
//   dma-map-ref GROUP BYTES [REPEAT]
//
// Prints: c-reference map_ms=... unmap_ms=... map_ms_per_gib=... unmap_ms_per_gib=... bytes=... backing=...
// Built static by Tests/Lab/lab for the guest.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int die(const char *what) {
    fprintf(stderr, "dma-map-ref: %s: %s\n", what, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: dma-map-ref GROUP BYTES [REPEAT]\n"); return 2; }
    char path[64];
    snprintf(path, sizeof path, "/dev/vfio/%s", argv[1]);
    size_t size = strtoull(argv[2], NULL, 0);
    int repeat = argc > 3 ? atoi(argv[3]) : 3;
    int container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    if (container < 0) return die("open /dev/vfio/vfio");
    int group = open(path, O_RDWR | O_CLOEXEC);
    if (group < 0) return die(path);
    struct vfio_group_status status = { .argsz = sizeof status };
    if (ioctl(group, VFIO_GROUP_GET_STATUS, &status) < 0) return die("VFIO_GROUP_GET_STATUS");
    if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) { fprintf(stderr, "dma-map-ref: group not viable\n"); return 1; }
    if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0) return die("VFIO_GROUP_SET_CONTAINER");
    if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0) return die("VFIO_SET_IOMMU");

    const char *backing = "4k";
    void *buffer = MAP_FAILED;
    if (size % (1UL << 30) == 0) {
        buffer = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (30 << MAP_HUGE_SHIFT), -1, 0);
        if (buffer != MAP_FAILED) backing = "hugetlb-1g";
    }
    if (buffer == MAP_FAILED && size % (2UL << 20) == 0) {
        buffer = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (21 << MAP_HUGE_SHIFT), -1, 0);
        if (buffer != MAP_FAILED) backing = "hugetlb-2m";
    }
    if (buffer == MAP_FAILED) {
        buffer = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (buffer == MAP_FAILED) return die("mmap");
        if (size >= (2UL << 20) && madvise(buffer, size, MADV_HUGEPAGE) == 0) backing = "thp";
    }
    for (size_t offset = 0; offset < size; offset += 4096) ((volatile char *)buffer)[offset] = 1;

    double best_map = 1e30, best_unmap = 1e30;
    for (int i = 0; i < (repeat > 0 ? repeat : 1); i++) {
        struct vfio_iommu_type1_dma_map map = {
            .argsz = sizeof map, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
            .vaddr = (unsigned long)buffer, .iova = 2UL << 20, .size = size,
        };
        double t0 = now_ms();
        if (ioctl(container, VFIO_IOMMU_MAP_DMA, &map) < 0) return die("VFIO_IOMMU_MAP_DMA");
        double t1 = now_ms();
        struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof unmap, .iova = 2UL << 20, .size = size };
        if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap) < 0) return die("VFIO_IOMMU_UNMAP_DMA");
        double t2 = now_ms();
        if (t1 - t0 < best_map) best_map = t1 - t0;
        if (t2 - t1 < best_unmap) best_unmap = t2 - t1;
    }
    double gib = (double)size / (1UL << 30);
    printf("c-reference map_ms=%.3f unmap_ms=%.3f map_ms_per_gib=%.3f unmap_ms_per_gib=%.3f bytes=%zu backing=%s\n",
           best_map, best_unmap, best_map / gib, best_unmap / gib, size, backing);
    munmap(buffer, size);
    close(group);
    close(container);
    return 0;
}
