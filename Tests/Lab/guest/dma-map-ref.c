// dma-map-ref: the C reference for `vfioctl dma bench`. Raw ioctls, no library. type1: open the
// container and group, set type1v2. --iommufd: open the device's file, bind it to a new iommufd
// and attach it to an IOAS (iommufd-ref.h). Then allocate and touch a buffer the way vfioctl's
// DMABuffer does for the same --backing (auto: hugetlb 1G/2M if reserved, else anonymous memory
// with MADV_HUGEPAGE; 4k: anonymous memory with MADV_NOHUGEPAGE; 2m: hugetlb 2 MiB pages), then
// time map and unmap (VFIO_IOMMU_MAP_DMA/UNMAP_DMA, or IOMMU_IOAS_MAP/UNMAP) at IOVA 2 MiB.
//
//   dma-map-ref [--backing auto|4k|2m] GROUP BYTES [REPEAT]
//   dma-map-ref [--backing auto|4k|2m] --iommufd DEVICE BYTES [REPEAT]
//
// Prints: c-reference map_ms=... unmap_ms=... map_ms_per_gib=... unmap_ms_per_gib=...
//         map_median_ms=... unmap_median_ms=... bytes=... backing=... (map_ms/unmap_ms: best)
// Built static by Tests/Lab/lab for the guest.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "iommufd-ref.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int die(const char *what) {
    fprintf(stderr, "dma-map-ref: %s: %s\n", what, strerror(errno));
    return 1;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, int count) {
    qsort(values, count, sizeof *values, compare);
    return count % 2 ? values[count / 2] : (values[count / 2 - 1] + values[count / 2]) / 2;
}

int main(int argc, char **argv) {
    const char *want = "auto";
    int use_iommufd = 0;
    while (argc > 1 && strncmp(argv[1], "--", 2) == 0) {
        if (strcmp(argv[1], "--backing") == 0 && argc > 2) { want = argv[2]; argc -= 2; argv += 2; }
        else if (strcmp(argv[1], "--iommufd") == 0) { use_iommufd = 1; argc--; argv++; }
        else break;
    }
    if (argc < 3 || (strcmp(want, "auto") && strcmp(want, "4k") && strcmp(want, "2m"))) {
        fprintf(stderr, "usage: dma-map-ref [--backing auto|4k|2m] [--iommufd] GROUP|DEVICE BYTES [REPEAT]\n");
        return 2;
    }
    size_t size = strtoull(argv[2], NULL, 0);
    int repeat = argc > 3 ? atoi(argv[3]) : 3;
    if (repeat < 1 || repeat > 1000) { fprintf(stderr, "dma-map-ref: REPEAT must be 1-1000\n"); return 2; }
    int container = -1, iommufd = -1;
    uint32_t ioas = 0;
    if (use_iommufd) {
        const char *what = "";
        if (iommufd_open_device(argv[1], &iommufd, &ioas, &what) < 0) return die(what);
    } else {
        char path[64];
        snprintf(path, sizeof path, "/dev/vfio/%s", argv[1]);
        container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
        if (container < 0) return die("open /dev/vfio/vfio");
        int group = open(path, O_RDWR | O_CLOEXEC);
        if (group < 0) return die(path);
        struct vfio_group_status status = { .argsz = sizeof status };
        if (ioctl(group, VFIO_GROUP_GET_STATUS, &status) < 0) return die("VFIO_GROUP_GET_STATUS");
        if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) { fprintf(stderr, "dma-map-ref: group not viable\n"); return 1; }
        if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0) return die("VFIO_GROUP_SET_CONTAINER");
        if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0) return die("VFIO_SET_IOMMU");
    }

    const char *backing = "4k";
    void *buffer = MAP_FAILED;
    int anonymous = MAP_PRIVATE | MAP_ANONYMOUS;
    if (strcmp(want, "auto") == 0 && size % (1UL << 30) == 0) {
        buffer = mmap(NULL, size, PROT_READ | PROT_WRITE, anonymous | MAP_HUGETLB | (30 << MAP_HUGE_SHIFT), -1, 0);
        if (buffer != MAP_FAILED) backing = "hugetlb-1g";
    }
    if (strcmp(want, "4k") != 0 && buffer == MAP_FAILED && size % (2UL << 20) == 0) {
        buffer = mmap(NULL, size, PROT_READ | PROT_WRITE, anonymous | MAP_HUGETLB | (21 << MAP_HUGE_SHIFT), -1, 0);
        if (buffer != MAP_FAILED) backing = "hugetlb-2m";
        else if (strcmp(want, "2m") == 0) return die("mmap of 2 MiB hugetlb pages (reserve them: /proc/sys/vm/nr_hugepages)");
    }
    if (buffer == MAP_FAILED) {
        buffer = mmap(NULL, size, PROT_READ | PROT_WRITE, anonymous, -1, 0);
        if (buffer == MAP_FAILED) return die("mmap");
        if (strcmp(want, "4k") == 0) {
            if (madvise(buffer, size, MADV_NOHUGEPAGE) != 0) return die("madvise(MADV_NOHUGEPAGE)");
        } else if (size >= (2UL << 20) && madvise(buffer, size, MADV_HUGEPAGE) == 0) {
            backing = "thp";
        }
    }
    for (size_t offset = 0; offset < size; offset += 4096) ((volatile char *)buffer)[offset] = 1;

    double *map_times = calloc(repeat, sizeof(double)), *unmap_times = calloc(repeat, sizeof(double));
    if (!map_times || !unmap_times) return die("calloc");
    double best_map = 1e30, best_unmap = 1e30;
    const uint64_t iova = 2UL << 20;
    for (int i = 0; i < repeat; i++) {
        double t0, t1, t2;
        if (use_iommufd) {
            struct iommu_ioas_map map = {
                .size = sizeof map, .ioas_id = ioas,
                .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
                .user_va = (uint64_t)buffer, .length = size, .iova = iova,
            };
            t0 = now_ms();
            if (ioctl(iommufd, IOMMU_IOAS_MAP, &map) < 0) return die("IOMMU_IOAS_MAP");
            t1 = now_ms();
            struct iommu_ioas_unmap unmap = { .size = sizeof unmap, .ioas_id = ioas, .iova = iova, .length = size };
            if (ioctl(iommufd, IOMMU_IOAS_UNMAP, &unmap) < 0) return die("IOMMU_IOAS_UNMAP");
            t2 = now_ms();
        } else {
            struct vfio_iommu_type1_dma_map map = {
                .argsz = sizeof map, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
                .vaddr = (unsigned long)buffer, .iova = iova, .size = size,
            };
            t0 = now_ms();
            if (ioctl(container, VFIO_IOMMU_MAP_DMA, &map) < 0) return die("VFIO_IOMMU_MAP_DMA");
            t1 = now_ms();
            struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof unmap, .iova = iova, .size = size };
            if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap) < 0) return die("VFIO_IOMMU_UNMAP_DMA");
            t2 = now_ms();
        }
        map_times[i] = t1 - t0;
        unmap_times[i] = t2 - t1;
        if (t1 - t0 < best_map) best_map = t1 - t0;
        if (t2 - t1 < best_unmap) best_unmap = t2 - t1;
    }
    double gib = (double)size / (1UL << 30);
    printf("c-reference map_ms=%.3f unmap_ms=%.3f map_ms_per_gib=%.3f unmap_ms_per_gib=%.3f map_median_ms=%.3f unmap_median_ms=%.3f bytes=%zu backing=%s\n",
           best_map, best_unmap, best_map / gib, best_unmap / gib, median(map_times, repeat), median(unmap_times, repeat), size, backing);
    return 0;
}
