#!/usr/bin/env bash
# Scale benchmark (issue 3): create, lookup (stat) and unlink per operation in one directory
# holding 1,000 entries and 1,000,000 entries, through a real ticketfs mount. Prints the time
# per operation at each size and the ratio (1M / 1K); the target is a ratio within 3.
# Usage: bash benches/scale.sh [BIG=1000000]   (needs root and /dev/fuse; builds first)
set -euo pipefail
cd "$(dirname "$0")/.."
BIG=${1:-1000000}
SAMPLE=2000
cargo build --release --workspace --quiet
work=$(mktemp -d)
mnt="$work/mnt"
mkdir -p "$mnt"
cleanup() { umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
./target/release/mkfs-ticketfs -s 8G "$work/image" >/dev/null
./target/release/ticketfs "$work/image" "$mnt"
# Fill the directory (python keeps it to one process: the cost measured is the filesystem's).
measure() {  # $1: entries already present; prints create/stat/unlink microseconds per op
python3 - "$mnt/d" "$1" "$SAMPLE" <<'PY'
import os, sys, time
d, n, sample = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(d, exist_ok=True)
have = len(os.listdir(d)) if n else 0
for i in range(have, n):
    os.close(os.open(f"{d}/f{i:07d}", os.O_CREAT | os.O_WRONLY, 0o644))
names = [f"{d}/probe{i:05d}" for i in range(sample)]
t = time.perf_counter()
for p in names:
    os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
c = time.perf_counter() - t
# stat through a fresh lookup: drop the kernel's dentry cache first.
with open("/proc/sys/vm/drop_caches", "w") as f:
    f.write("2\n")
t = time.perf_counter()
for p in names:
    os.stat(p)
s = time.perf_counter() - t
t = time.perf_counter()
for p in names:
    os.unlink(p)
u = time.perf_counter() - t
print(f"{c / sample * 1e6:.1f} {s / sample * 1e6:.1f} {u / sample * 1e6:.1f}")
PY
}
small=$(measure 1000)
rm -rf "$mnt/d"
big=$(measure "$BIG")
read -r sc ss su <<<"$small"
read -r bc bs bu <<<"$big"
printf '%-10s %12s %12s %8s\n' op "1K us/op" "$BIG us/op" ratio
for row in "create $sc $bc" "stat $ss $bs" "unlink $su $bu"; do
    read -r name a b <<<"$row"
    printf '%-10s %12s %12s %8.2f\n' "$name" "$a" "$b" "$(echo "$b / $a" | bc -l)"
done
