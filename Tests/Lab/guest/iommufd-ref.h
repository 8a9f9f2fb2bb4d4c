// iommufd-ref.h: the iommufd half of the lab's C references (dma-map-ref, bar-dma-ref), so they
// can time the same ioctls as vfioctl's iommufd backend. Raw ioctls, no library: the device's
// file found through sysfs vfio-dev/, /dev/iommu opened, an IOAS allocated, the device bound
// (VFIO_DEVICE_BIND_IOMMUFD) and attached (VFIO_DEVICE_ATTACH_IOMMUFD_PT).
#include <dirent.h>
#include <linux/iommufd.h>

// Opens DEVICE (a PCI address) through iommufd; sets *iommufd and *ioas; returns the device fd
// or -1 with errno set and *what naming the step that failed.
static inline int iommufd_open_device(const char *device, int *iommufd, uint32_t *ioas, const char **what) {
    char path[160], name[256] = "";
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/vfio-dev", device);
    DIR *dir = opendir(path);
    if (!dir) { *what = "opendir vfio-dev (no VFIO device file?)"; return -1; }
    for (struct dirent *entry; (entry = readdir(dir));)
        if (strncmp(entry->d_name, "vfio", 4) == 0) snprintf(name, sizeof name, "%s", entry->d_name);
    closedir(dir);
    if (!name[0]) { errno = ENOENT; *what = "no vfioN in vfio-dev"; return -1; }
    *iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
    if (*iommufd < 0) { *what = "open /dev/iommu"; return -1; }
    struct iommu_ioas_alloc alloc = { .size = sizeof alloc };
    if (ioctl(*iommufd, IOMMU_IOAS_ALLOC, &alloc) < 0) { *what = "IOMMU_IOAS_ALLOC"; return -1; }
    *ioas = alloc.out_ioas_id;
    snprintf(path, sizeof path, "/dev/vfio/devices/%.64s", name);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) { *what = "open the VFIO device file"; return -1; }
    struct vfio_device_bind_iommufd bind = { .argsz = sizeof bind, .iommufd = *iommufd };
    if (ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, &bind) < 0) { *what = "VFIO_DEVICE_BIND_IOMMUFD"; return -1; }
    struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof attach, .pt_id = *ioas };
    if (ioctl(fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) < 0) { *what = "VFIO_DEVICE_ATTACH_IOMMUFD_PT"; return -1; }
    return fd;
}

// VFIO_DEVICE_FEATURE(GET | DMA_BUF): one range of region INDEX as a dma-buf fd, or -1.
static inline int iommufd_export_dmabuf(int device, uint32_t index, uint64_t offset, uint64_t length) {
    struct {
        struct vfio_device_feature feature;
        struct vfio_device_feature_dma_buf request;
        struct vfio_region_dma_range range;
    } __attribute__((packed)) buf;
    memset(&buf, 0, sizeof buf);
    buf.feature.argsz = sizeof buf;
    buf.feature.flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
    buf.request.region_index = index;
    buf.request.open_flags = O_RDWR | O_CLOEXEC;
    buf.request.nr_ranges = 1;
    buf.range.offset = offset;
    buf.range.length = length;
    return ioctl(device, VFIO_DEVICE_FEATURE, &buf);
}
