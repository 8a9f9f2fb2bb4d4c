// bar-dma-ref: the C reference for `vfioctl dma bench-bar`. Raw VFIO ioctls, no library: open
// the container, the group and the device, mmap a window of a BAR at an address congruent to its
// bus address modulo 1 GiB plus SKEW (the placement vfioctl uses), madvise it MADV_HUGEPAGE,
// optionally read one byte per page, then time VFIO_IOMMU_MAP_DMA and VFIO_IOMMU_UNMAP_DMA of the
// whole mapping at IOVA 1 GiB. A fresh mapping each repetition; the median is printed.
// --iommufd: the device is bound to a new iommufd and attached to an IOAS (iommufd-ref.h; GROUP
// is not used), and the timed map is what vfioctl's iommufd backend does for a peer BAR: export
// the window as a dma-buf (VFIO_DEVICE_FEATURE_DMA_BUF), IOMMU_IOAS_MAP_FILE it, close the
// dma-buf's fd; the unmap is IOMMU_IOAS_UNMAP. --iommufd --map-va: IOMMU_IOAS_MAP of the BAR's
// mapping itself (a PFNMAP VMA), once; prints the errno it fails with (or that it succeeded).
//
//   bar-dma-ref [--iommufd [--map-va]] GROUP DEVICE BAR OFFSET LENGTH SKEW TOUCH(0|1) REPEAT
//
// Prints: c-reference bar-dma map_ms=... unmap_ms=... bytes=... skew=0x... touched=yes|no
//         (--map-va: c-reference ioas-map-va errno=N (NAME))
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

#define GIB (1ULL << 30)

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int die(const char *what) {
    fprintf(stderr, "bar-dma-ref: %s: %s\n", what, strerror(errno));
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
    int use_iommufd = 0, map_va = 0;
    while (argc > 1 && strncmp(argv[1], "--", 2) == 0) {
        if (strcmp(argv[1], "--iommufd") == 0) use_iommufd = 1;
        else if (strcmp(argv[1], "--map-va") == 0) map_va = 1;
        else break;
        argc--; argv++;
    }
    if (argc < 9 || (map_va && !use_iommufd)) { fprintf(stderr, "usage: bar-dma-ref [--iommufd [--map-va]] GROUP DEVICE BAR OFFSET LENGTH SKEW TOUCH REPEAT\n"); return 2; }
    char path[128];
    const char *device = argv[2];
    int bar = atoi(argv[3]);
    uint64_t window = strtoull(argv[4], NULL, 0), length = strtoull(argv[5], NULL, 0), skew = strtoull(argv[6], NULL, 0);
    int touch = atoi(argv[7]), repeat = atoi(argv[8]);
    if (bar < 0 || bar > 5 || repeat < 1 || repeat > 1000 || length == 0 || length % 4096 || skew % 4096) {
        fprintf(stderr, "bar-dma-ref: bad arguments\n");
        return 2;
    }

    // The BAR's bus address: line BAR of sysfs `resource`.
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/resource", device);
    FILE *resource = fopen(path, "r");
    if (!resource) return die(path);
    unsigned long long start = 0, end = 0, flags = 0;
    for (int i = 0; i <= bar; i++) {
        if (fscanf(resource, "%llx %llx %llx", &start, &end, &flags) != 3) { fclose(resource); fprintf(stderr, "bar-dma-ref: short %s\n", path); return 1; }
    }
    fclose(resource);

    int container = -1, iommufd = -1, fd;
    uint32_t ioas = 0;
    if (use_iommufd) {
        const char *what = "";
        fd = iommufd_open_device(device, &iommufd, &ioas, &what);
        if (fd < 0) return die(what);
    } else {
        container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
        if (container < 0) return die("open /dev/vfio/vfio");
        snprintf(path, sizeof path, "/dev/vfio/%s", argv[1]);
        int group = open(path, O_RDWR | O_CLOEXEC);
        if (group < 0) return die(path);
        if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0) return die("VFIO_GROUP_SET_CONTAINER");
        if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0) return die("VFIO_SET_IOMMU");
        fd = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, device);
        if (fd < 0) return die("VFIO_GROUP_GET_DEVICE_FD");
    }
    struct vfio_region_info region = { .argsz = sizeof region, .index = VFIO_PCI_BAR0_REGION_INDEX + bar };
    if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &region) < 0) return die("VFIO_DEVICE_GET_REGION_INFO");
    if (window + length > region.size) { fprintf(stderr, "bar-dma-ref: window outside the BAR\n"); return 2; }

    double *map_times = calloc(repeat, sizeof(double)), *unmap_times = calloc(repeat, sizeof(double));
    if (!map_times || !unmap_times) return die("calloc");
    uint64_t physical = start + window;
    for (int i = 0; i < repeat; i++) {
        size_t reserve = length + GIB + skew;
        char *reservation = mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (reservation == MAP_FAILED) return die("reserving address space");
        uint64_t floor = (uint64_t)reservation, address = (floor & ~(GIB - 1)) + (physical & (GIB - 1));
        if (address < floor) address += GIB;
        address += skew;
        char *base = mmap((void *)address, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, region.offset + window);
        if (base == MAP_FAILED) return die("mmap of the BAR");
        if (madvise(base, length, MADV_HUGEPAGE) != 0) return die("madvise");
        if (touch) {
            volatile char sink = 0;
            for (uint64_t offset = 0; offset < length; offset += 4096) sink += ((volatile char *)base)[offset];
            (void)sink;
        }
        double t0, t1, t2;
        if (map_va) {
            struct iommu_ioas_map map = {
                .size = sizeof map, .ioas_id = ioas,
                .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
                .user_va = (uint64_t)base, .length = length, .iova = GIB,
            };
            int rc = ioctl(iommufd, IOMMU_IOAS_MAP, &map), code = errno;
            if (rc == 0) { printf("c-reference ioas-map-va ok\n"); return 0; }
            printf("c-reference ioas-map-va errno=%d (%s)\n", code, strerror(code));
            return 0;
        } else if (use_iommufd) {
            t0 = now_ms();
            int dmabuf = iommufd_export_dmabuf(fd, region.index, window, length);
            if (dmabuf < 0) return die("VFIO_DEVICE_FEATURE(GET|DMA_BUF)");
            struct iommu_ioas_map_file map = {
                .size = sizeof map, .ioas_id = ioas, .fd = dmabuf, .start = 0, .length = length, .iova = GIB,
                .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
            };
            if (ioctl(iommufd, IOMMU_IOAS_MAP_FILE, &map) < 0) return die("IOMMU_IOAS_MAP_FILE");
            close(dmabuf);
            t1 = now_ms();
            struct iommu_ioas_unmap unmap = { .size = sizeof unmap, .ioas_id = ioas, .iova = GIB, .length = length };
            if (ioctl(iommufd, IOMMU_IOAS_UNMAP, &unmap) < 0) return die("IOMMU_IOAS_UNMAP");
            t2 = now_ms();
        } else {
            struct vfio_iommu_type1_dma_map map = {
                .argsz = sizeof map, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
                .vaddr = (uint64_t)base, .iova = GIB, .size = length,
            };
            t0 = now_ms();
            if (ioctl(container, VFIO_IOMMU_MAP_DMA, &map) < 0) return die("VFIO_IOMMU_MAP_DMA");
            t1 = now_ms();
            struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof unmap, .iova = GIB, .size = length };
            if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap) < 0) return die("VFIO_IOMMU_UNMAP_DMA");
            t2 = now_ms();
        }
        map_times[i] = t1 - t0;
        unmap_times[i] = t2 - t1;
        munmap(reservation, reserve);
    }
    printf("c-reference bar-dma map_ms=%.3f unmap_ms=%.3f bytes=%llu skew=0x%llx touched=%s repeat=%d\n",
           median(map_times, repeat), median(unmap_times, repeat), (unsigned long long)length,
           (unsigned long long)skew, touch ? "yes" : "no", repeat);
    return 0;
}
