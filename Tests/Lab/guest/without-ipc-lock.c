// without-ipc-lock COMMAND [ARG...]: runs COMMAND as root but without CAP_IPC_LOCK (dropped
// from the bounding set, so an exec cannot regain it, and from the effective, permitted and
// inheritable sets), the way a VMM runs that is held to RLIMIT_MEMLOCK. busybox has no capsh.
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: without-ipc-lock COMMAND [ARG...]\n"); return 2; }
    if (prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0) != 0) { perror("prctl(PR_CAPBSET_DROP)"); return 3; }
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &header, data) != 0) { perror("capget"); return 3; }
    unsigned word = CAP_IPC_LOCK / 32, bit = 1u << (CAP_IPC_LOCK % 32);
    data[word].effective &= ~bit; data[word].permitted &= ~bit; data[word].inheritable &= ~bit;
    if (syscall(SYS_capset, &header, data) != 0) { perror("capset"); return 3; }
    execvp(argv[1], argv + 1);
    perror(argv[1]);
    return 127;
}
