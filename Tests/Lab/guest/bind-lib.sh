# Helpers for the binding scenarios (busybox sh), on top of lab-lib.sh.

# field_of FLAT KEY VALUE FIELD: in json_flat output, the FIELD of the object whose KEY is VALUE
# (e.g. the action of the entry whose address is 0000:00:04.0). Keys are sorted in vfioctl's JSON,
# so the field may come before or after the key: the file is read twice.
field_of() {
    awk -F= -v key="$2" -v value="$3" -v field="$4" '
        NR == FNR {
            n = length($1) - length(key)
            if (n > 0 && substr($1, n) == "." key && substr($0, length($1) + 2) == value) prefix = substr($1, 1, n - 1)
            next
        }
        prefix != "" && $1 == prefix "." field { print substr($0, length($1) + 2); exit }
    ' "$1" "$1"
}

# The journal is appended (the last line for an address wins), so ask vfioctl what it holds:
# `restore --all --dry-run --json` lists every live entry, to_driver being its original driver.
journal_flat() { vfioctl restore --all --dry-run --json 2>/dev/null | json_flat; }
# no_journal_entry DEVICE: true when the binding journal has no entry for DEVICE.
no_journal_entry() { ! journal_flat | grep -q "=$1\$"; }
# journal_original DEVICE: the original driver the journal records for DEVICE ("null": none).
journal_original() { journal_flat >/tmp/journal.flat; field_of /tmp/journal.flat address "$1" to_driver; }
