#ifndef CPCINAMES_H
#define CPCINAMES_H
#include <stddef.h>

/// An opaque handle on libpci's name database (pci.ids, and udev's hwdb where libpci has it).
/// Not thread-safe: libpci caches names in the handle; use one handle from one thread.
typedef struct vfioctl_pci_names vfioctl_pci_names;

/// Opens the name database. `ids_file` may be NULL for libpci's default pci.ids path.
/// Never fails hard: a missing pci.ids just makes every lookup return 0.
vfioctl_pci_names *vfioctl_pci_names_open(const char *ids_file);
void vfioctl_pci_names_close(vfioctl_pci_names *names);

/// Each lookup writes a NUL-terminated name into buf and returns 1, or returns 0 when the
/// database has no name for the IDs (numbers are never substituted for names).
int vfioctl_pci_vendor_name(vfioctl_pci_names *names, char *buf, size_t size, unsigned vendor);
int vfioctl_pci_device_name(vfioctl_pci_names *names, char *buf, size_t size,
                            unsigned vendor, unsigned device);
int vfioctl_pci_subsystem_name(vfioctl_pci_names *names, char *buf, size_t size,
                               unsigned vendor, unsigned device,
                               unsigned subvendor, unsigned subdevice);
/// `class_code` is the 24-bit class from sysfs (base, sub, prog-if). The class name is the
/// sub-class name lspci prints ("VGA compatible controller"), or the base class name.
int vfioctl_pci_class_name(vfioctl_pci_names *names, char *buf, size_t size, unsigned class_code);
int vfioctl_pci_progif_name(vfioctl_pci_names *names, char *buf, size_t size, unsigned class_code);
#endif
