#!/usr/bin/env bash
# What memres=on costs the daemon, counted in instructions rather than timed: the daemon runs
# under valgrind's callgrind (which counts every instruction it executes in user space) while
# examples/fsbench.rs runs the create/write/unlink mix, N rounds and then 2N rounds on fresh
# images, with memres=on and with memres=off. The difference between the two lengths is the
# work of N rounds without the mount's own start and end; divided by N, instructions per round.
# Timings of the same mix move by 5-40% between runs on this shared machine (benches/compare.sh
# prints them); instruction counts do not depend on the host. What they leave out is the
# kernel's side, the same system calls either way.
#
# Usage: bash benches/memres-cost.sh            (root, /dev/fuse, valgrind)
#        CALLGRIND_ROUNDS=3000 bash benches/memres-cost.sh
# Prints `memres_on_instructions_per_round=... memres_off_instructions_per_round=...
# memres_cost_percent=...` on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${CALLGRIND_ROUNDS:-3000}
WORK=${WORK:-/var/tmp}
command -v valgrind >/dev/null || { echo "memres-cost.sh: valgrind is missing" >&2; exit 2; }
cargo build --release --workspace --quiet
cargo build --release --example fsbench --quiet
bin=$PWD/target/release
work=$(mktemp -d "$WORK/tkfs-memres.XXXXXX")
mnt=$work/mnt
mkdir -p "$mnt"
pid=
cleanup() {
    if mountpoint -q "$mnt"; then umount "$mnt" 2>/dev/null || umount -l "$mnt"; fi
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# instructions MEMRES ROUNDS: the daemon's instruction count over a mount that runs the mix.
instructions() {
    truncate -s 1G "$work/image"
    "$bin/mkfs-ticketfs" -s 1G "$work/image" >/dev/null
    # uring=off: valgrind 3.19 runs one thread at a time and takes io_uring_enter for a call
    # that does not block, so a thread waiting there for a request would stop every other
    # (the mount hangs). memres lives in the engine, not in the transport.
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
        "$bin/ticketfs" "$work/image" "$mnt" -f -o "memres=$1,uring=off" 2>"$work/vg.log" &
    pid=$!
    for _ in $(seq 600); do
        mountpoint -q "$mnt" && break
        kill -0 "$pid" 2>/dev/null || { cat "$work/vg.log" >&2; exit 1; }
        sleep 0.1
    done
    "$bin/examples/fsbench" mix "$mnt" "$2" >/dev/null
    umount "$mnt"
    wait "$pid"
    pid=
    rm -f "$work/image"
    awk '/Collected :/ {print $NF}' "$work/vg.log"
}

declare -A per
for m in on off; do
    a=$(instructions "$m" "$ROUNDS")
    b=$(instructions "$m" $((2 * ROUNDS)))
    per[$m]=$(((b - a) / ROUNDS))
    echo "memres=$m: $a instructions for $ROUNDS rounds, $b for $((2 * ROUNDS))" >&2
done
cost=$(echo "scale=2; 100 * (${per[on]} - ${per[off]}) / ${per[off]}" | bc -l)
echo "memres_on_instructions_per_round=${per[on]} memres_off_instructions_per_round=${per[off]} memres_cost_percent=$cost"
