#!/usr/bin/env bash
# fsck on a big tree: fsck.ticketfs -n against e2fsck -f -n on an ext4 image holding the same
# tree, both built in this run on the same disk. Each check runs with the page cache dropped
# first; wall time and peak resident memory (GNU time) are printed with their ratios.
#
#   bash benches/fsck.sh            # 1000 directories x 1000 empty files = 1,000,000 files
#   DIRS=100 FILES=1000 bash benches/fsck.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DIRS=${DIRS:-1000}
FILES=${FILES:-1000}
SIZE=${SIZE:-8G}
total=$((DIRS * FILES))
work=$(mktemp -d /var/tmp/ticketfs-fsck-bench.XXXXXX)
mnt="$work/mnt"
cleanup() {
    if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" || umount -l "$mnt" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$mnt" "$work/src"
cargo build --release --workspace >/dev/null 2>&1
cargo build --release --example tree >/dev/null 2>&1
bin=target/release
echo "building: $total files in $DIRS directories"
"$bin/mkfs-ticketfs" -s "$SIZE" "$work/ticketfs.img" >/dev/null
"$bin/ticketfs" "$work/ticketfs.img" "$mnt"
"$bin/examples/tree" "$mnt" "$DIRS" "$FILES" 4 | sed 's/^/  ticketfs (through FUSE): /'
umount "$mnt"
"$bin/examples/tree" "$work/src" "$DIRS" "$FILES" 4 | sed 's/^/  source tree for ext4: /'
truncate -s "$SIZE" "$work/ext4.img"
mkfs.ext4 -q -F -N $((total + DIRS + 4096)) -d "$work/src" "$work/ext4.img"
rm -rf "$work/src"

# Prints "seconds peak_kib" for a command run with a cold page cache; fails if it reports errors.
measure() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>&1 || {
        cat "$work/out" >&2
        echo "$* failed" >&2
        exit 1
    }
    cat "$work/time"
}
read -r t_tfs m_tfs < <(measure "$bin/fsck-ticketfs" -n "$work/ticketfs.img")
tail -1 "$work/out" | sed 's/^/  /'
read -r t_ext m_ext < <(measure e2fsck -f -n "$work/ext4.img")
tail -1 "$work/out" | sed 's/^/  /'
printf '%-26s %12s %16s\n' "" "seconds" "peak RSS (MiB)"
printf '%-26s %12s %16s\n' "fsck.ticketfs -n" "$t_tfs" "$((m_tfs / 1024))"
printf '%-26s %12s %16s\n' "e2fsck -f -n" "$t_ext" "$((m_ext / 1024))"
awk -v a="$t_tfs" -v b="$t_ext" -v c="$m_tfs" -v d="$m_ext" \
    'BEGIN { printf "ratio ticketfs/e2fsck: time %.2f, memory %.2f\n", a / b, c / d }'
