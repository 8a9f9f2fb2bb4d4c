// vfio-hold GROUP ADDRESS: holds a device through VFIO the way a running VM does (container,
// group and device fd open) until killed; prints "ready" once it holds the device fd. A driver
// unbind of the device waits until this process lets go.
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: vfio-hold GROUP ADDRESS\n"); return 2; }
    char path[64];
    snprintf(path, sizeof path, "/dev/vfio/%s", argv[1]);
    int container = open("/dev/vfio/vfio", O_RDWR), group = open(path, O_RDWR);
    if (container < 0 || group < 0) { perror("open"); return 1; }
    if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) != 0) { perror("VFIO_GROUP_SET_CONTAINER"); return 1; }
    if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) != 0) { perror("VFIO_SET_IOMMU"); return 1; }
    int device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, argv[2]);
    if (device < 0) { perror("VFIO_GROUP_GET_DEVICE_FD"); return 1; }
    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
