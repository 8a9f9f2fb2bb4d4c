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

# no_journal_entry DEVICE: true when the binding journal does not mention DEVICE.
no_journal_entry() { ! grep -q "\"$1\"" /run/vfioctl/journal.json 2>/dev/null; }
