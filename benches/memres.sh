#!/usr/bin/env bash
# memres=on against memres=off under the same memory budget (issue 4): the writers workload
# (examples/writers.rs: 64 threads of create/write/rename/read/unlink) on a fresh image, once
# with each setting, printing side by side: operations that failed (by error), operation
# latency (median, p99, max: stalls), throughput, the daemon's peak resident size, reservation
# waits, overruns, the peak charged against the budget and fsck's verdict.
#
# With CGROUP_LIMIT set (e.g. 16M), the daemon runs inside a memory cgroup of that limit (v2
# where the memory controller is enabled, else v1), its budget derived from the limit, and the
# cgroup's peak usage and OOM kills are reported too.
#
# Usage: bash benches/memres.sh            (MEM=8M THREADS=16 WRITERS=64 OPS=400 SIZE=1G LOG=64M)
#        CGROUP_LIMIT=16M bash benches/memres.sh
#        CGROUP_LIMIT=16M SIZE=4G LOG=1G bash benches/memres.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MEM=${MEM:-8M}
THREADS=${THREADS:-16}
WRITERS=${WRITERS:-64}
OPS=${OPS:-400}
# A large log lets dirty metadata pile up before log space forces it home: memory must.
LOG=${LOG:-64M}
SIZE=${SIZE:-1G}
CGROUP_LIMIT=${CGROUP_LIMIT:-}
source scripts/cgroup.sh
cargo build --release --workspace --quiet
cargo build --release --example writers --quiet
bin=target/release
work=$(mktemp -d)
daemon=
cleanup() {
    umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null || true
    cg_remove
    rm -rf "$work"
}
trap cleanup EXIT

to_bytes() { numfmt --from=iec "$1"; }
json_sum() { grep -o "\"$1\": [0-9]*" | awk '{ s += $2 } END { print s + 0 }'; }
json_get() { grep -o "\"$1\": [0-9]*" | head -1 | awk '{ print $2 }'; }

run() {
    local mode=$1 opts
    rm -f "$work/image"
    mkdir -p "$work/mnt"
    "$bin/mkfs-ticketfs" -s "$SIZE" -l "$LOG" "$work/image" >/dev/null
    opts="memres=$mode,max_threads=$THREADS"
    [ -z "$CGROUP_LIMIT" ] && opts="$opts,mem=$MEM"
    if [ -n "$CGROUP_LIMIT" ]; then
        cg_create "ticketfs-bench-$$" "$(to_bytes "$CGROUP_LIMIT")"
        cg_run "$bin/ticketfs" "$work/image" "$work/mnt" -f -o "$opts" 2>"$work/daemon.err" &
    else
        "$bin/ticketfs" "$work/image" "$work/mnt" -f -o "$opts" 2>"$work/daemon.err" &
    fi
    daemon=$!
    for _ in $(seq 200); do mountpoint -q "$work/mnt" && break; sleep 0.05; done
    mountpoint -q "$work/mnt" || { cat "$work/daemon.err"; return 1; }
    local out st hwm="?" cg="" alive=yes
    out=$("$bin/examples/writers" "$work/mnt" "$WRITERS" "$OPS" 2>&1 || true)
    st=$("$bin/ticketfs" stats "$work/mnt" --json 2>/dev/null || echo '{}')
    if [ -r "/proc/$daemon/status" ]; then
        hwm=$(awk '/VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$daemon/status")
    else
        alive=no
    fi
    if [ -n "$CGROUP_LIMIT" ]; then
        cg=$(printf "cgroup %s peak %.1f MiB of %s, OOM kills %s" "$CG_VERSION" \
            "$(awk -v b="$(cg_peak)" 'BEGIN { print b / 1048576 }')" "$CGROUP_LIMIT" "$(cg_oom_kills)")
    fi
    umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt"
    wait "$daemon" 2>/dev/null || alive="$alive (daemon exit $?)"
    daemon=
    cg_remove
    local fsck
    if "$bin/fsck-ticketfs" -n "$work/image" >/dev/null 2>&1; then fsck=clean; else fsck="errors (exit $?)"; fi
    printf '%-12s %s\n' "memres=$mode" "$out"
    printf '%-12s daemon alive at end: %s, peak resident %s; %s\n' "" "$alive" "$hwm" "$cg"
    printf '%-12s budget %s, waits %s, overruns %s, peak charged %s, fsck %s\n' "" \
        "$(echo "$st" | json_get budget_bytes)" "$(echo "$st" | json_sum waits)" \
        "$(echo "$st" | json_get overruns)" "$(echo "$st" | json_get peak_charged_bytes)" "$fsck"
}

if [ -n "$CGROUP_LIMIT" ]; then limit="cgroup limit $CGROUP_LIMIT"; else limit="mem=$MEM"; fi
echo "writers workload: $WRITERS writers x $OPS operations, $limit, $THREADS request threads, $SIZE image, $LOG log"
run on
run off
