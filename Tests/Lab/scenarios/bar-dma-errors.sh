# bar-dma-errors: bad input to `bar plan`, `bar touch` and `dma check` fails with a clear error
# (and maps nothing): a BAR that does not exist, an I/O BAR, an unbound device, a non-viable
# group (the blocking device named), a DMA larger than RLIMIT_MEMLOCK, more mappings than
# dma_avail.
. /lab/bin/lab-lib.sh

EDU=0000:00:02.0 EDU2=0000:01:02.0 E1000=0000:01:01.0

# expect_error DESCRIPTION PATTERN COMMAND...: the command fails and its message matches.
expect_error() {
    what=$1 pattern=$2; shift 2
    if out=$("$@" 2>&1); then fail "$what: succeeded: $out"; return; fi
    echo "$out" | grep -q -- "$pattern" && ok "$what: $out" || fail "$what: unexpected error: $out"
}

expect_error "plan: BAR that does not exist" "has no BAR 3" vfioctl bar plan $EDU --bar 3
expect_error "plan: I/O BAR" "I/O-port BAR" vfioctl bar plan $E1000 --bar 1
expect_error "touch: unbound device" "vfio-pci" vfioctl bar touch $EDU --bar 0
expect_error "dma check: unbound device" "vfio-pci" vfioctl dma check $EDU

lab_bind $EDU vfio-pci || fail "could not bind $EDU to vfio-pci"
expect_error "touch: BAR that does not exist" "BAR 3 is not implemented" vfioctl bar touch $EDU --bar 3
expect_error "touch: bad skew" "multiple of 4096" vfioctl bar touch $EDU --bar 0 --skew 100

lab_bind $EDU2 vfio-pci || fail "could not bind $EDU2 to vfio-pci"
expect_error "touch: non-viable group names the blocker" "not viable: 0000:01:01.0 (e1000)" vfioctl bar touch $EDU2 --bar 0
expect_error "dma check: non-viable group" "not viable" vfioctl dma check $EDU2
lab_bind $E1000 vfio-pci || fail "could not bind $E1000 to vfio-pci"
expect_error "touch: I/O BAR through VFIO" "I/O-port BAR" vfioctl bar touch $E1000 --bar 1

# RLIMIT_MEMLOCK binds a process without CAP_IPC_LOCK (vfio_iommu_type1's rule): such a run is
# refused before anything is mapped. Root with CAP_IPC_LOCK is exempt, in the kernel and in
# vfioctl alike: the same 4 MiB under the same 1 MiB limit maps, and the report says why.
expect_error "dma check: over RLIMIT_MEMLOCK without CAP_IPC_LOCK" "exceeds RLIMIT_MEMLOCK of 1048576 bytes and the process lacks CAP_IPC_LOCK" \
    without-ipc-lock sh -c "ulimit -l 1024 && vfioctl dma check $EDU --size 4M"
sh -c "ulimit -l 1024 && vfioctl dma check $EDU --size 4M --json" >/tmp/exempt.json 2>&1 || fail "dma check with CAP_IPC_LOCK over the limit exited $?: $(cat /tmp/exempt.json)"
json_flat </tmp/exempt.json >/tmp/exempt.flat
check_eq "with CAP_IPC_LOCK: the limit is reported" 1048576 "$(json_get /tmp/exempt.flat .memlock_current)"
check_eq "with CAP_IPC_LOCK: exempt, as the kernel treats it" true "$(json_get /tmp/exempt.flat .memlock_exempt)"
check_eq "with CAP_IPC_LOCK: the kernel mapped all 4 MiB" 4194304 "$(json_get /tmp/exempt.flat '.test_mappings[0].size')"
# Under the limit, a run without CAP_IPC_LOCK maps (the check is not stricter than the kernel).
without-ipc-lock sh -c "ulimit -l 8192 && vfioctl dma check $EDU --size 4M --json" >/tmp/under.json 2>&1 || fail "dma check under the limit without CAP_IPC_LOCK exited $?: $(cat /tmp/under.json)"
check_eq "without CAP_IPC_LOCK under the limit: not exempt, mapped" "false 0" \
    "$(json_flat </tmp/under.json | awk -F= '$1 == ".memlock_exempt" { e = $2 } $1 == ".left_mapped" { l = $2 } END { print e, l }')"
limit=/sys/module/vfio_iommu_type1/parameters/dma_entry_limit
old=$(cat $limit)
echo 4 >$limit
expect_error "dma check: more mappings than dma_avail" "only 4 left (dma_avail" vfioctl dma check $EDU --size 64K --chunks 8
echo "$old" >$limit
vfioctl dma check $EDU --size 64K --chunks 8 --json | json_flat >/tmp/ok.flat || fail "dma check after restoring the limit exited $?"
check_eq "8 mappings fine again, nothing left mapped" 0 "$(json_get /tmp/ok.flat .left_mapped)"
lab_finish
