#include "CPCINames.h"
#include <pci/pci.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct vfioctl_pci_names {
    struct pci_access *access;
};

// libpci reports a missing or unreadable pci.ids through its warning callback, which by default
// prints to stderr; for vfioctl names are then simply absent. (Its error callback is only called
// for fatal conditions such as running out of memory, and must not return.)
static void quiet(char *msg, ...) { (void)msg; }

vfioctl_pci_names *vfioctl_pci_names_open(const char *ids_file) {
    vfioctl_pci_names *names = calloc(1, sizeof *names);
    if (!names) return NULL;
    names->access = pci_alloc();
    if (!names->access) { free(names); return NULL; }
    names->access->warning = quiet;
    names->access->debug = quiet;
    if (ids_file) pci_set_name_list_path(names->access, (char *)ids_file, 0);
    return names;
}

void vfioctl_pci_names_close(vfioctl_pci_names *names) {
    if (!names) return;
    pci_cleanup(names->access);
    free(names);
}

static int copy_result(const char *result, char *buf) {
    // With PCI_LOOKUP_NO_NUMBERS libpci returns NULL when it has no name.
    return result != NULL && buf[0] != 0;
}

int vfioctl_pci_vendor_name(vfioctl_pci_names *n, char *buf, size_t size, unsigned vendor) {
    if (!n || size == 0) return 0;
    buf[0] = 0;
    return copy_result(pci_lookup_name(n->access, buf, (int)size,
                                       PCI_LOOKUP_VENDOR | PCI_LOOKUP_NO_NUMBERS, vendor), buf);
}

int vfioctl_pci_device_name(vfioctl_pci_names *n, char *buf, size_t size,
                            unsigned vendor, unsigned device) {
    if (!n || size == 0) return 0;
    buf[0] = 0;
    return copy_result(pci_lookup_name(n->access, buf, (int)size,
                                       PCI_LOOKUP_DEVICE | PCI_LOOKUP_NO_NUMBERS, vendor, device), buf);
}

int vfioctl_pci_subsystem_name(vfioctl_pci_names *n, char *buf, size_t size,
                               unsigned vendor, unsigned device,
                               unsigned subvendor, unsigned subdevice) {
    if (!n || size == 0) return 0;
    buf[0] = 0;
    return copy_result(pci_lookup_name(n->access, buf, (int)size,
                                       PCI_LOOKUP_SUBSYSTEM | PCI_LOOKUP_DEVICE | PCI_LOOKUP_NO_NUMBERS,
                                       vendor, device, subvendor, subdevice), buf);
}

int vfioctl_pci_class_name(vfioctl_pci_names *n, char *buf, size_t size, unsigned class_code) {
    if (!n || size == 0) return 0;
    buf[0] = 0;
    // libpci takes the 16-bit base+sub class and answers with the sub-class name (what lspci
    // prints), falling back to the base class name.
    return copy_result(pci_lookup_name(n->access, buf, (int)size,
                                       PCI_LOOKUP_CLASS | PCI_LOOKUP_NO_NUMBERS,
                                       (int)(class_code >> 8)), buf);
}

int vfioctl_pci_progif_name(vfioctl_pci_names *n, char *buf, size_t size, unsigned class_code) {
    if (!n || size == 0) return 0;
    buf[0] = 0;
    return copy_result(pci_lookup_name(n->access, buf, (int)size,
                                       PCI_LOOKUP_PROGIF | PCI_LOOKUP_NO_NUMBERS,
                                       (int)(class_code >> 8), (int)(class_code & 0xff)), buf);
}
