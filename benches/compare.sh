#!/usr/bin/env bash
# ticketfs against Debian's fuse2fs (ext4 through FUSE) and kernel ext4 on a loop device, in one
# run: each on a fresh image of the same size in the same directory (same disk), the same
# workloads, one table with each figure and ticketfs's ratio to both peers. Then memres=on
# against memres=off on a create/write/unlink mix. Figures come from fio (JSON) and
# examples/fsbench.rs; caches are dropped before every read workload.
#
# Usage: bash benches/compare.sh                 (needs root, /dev/fuse, fio, fuse2fs, e2fsprogs;
#                                                 valgrind for the memres cost in instructions)
#        SIZE=8G SEQ=2G RAND=512M RUNTIME=20 bash benches/compare.sh
# Writes the table to stdout and, with OUT=FILE, to FILE as markdown. Each filesystem is mounted
# with its defaults (ticketfs checks permissions itself; with -o default_permissions the kernel
# asks for the directory's attributes again after each change to it: create 16.5k/s -> 10.8k/s).
# TICKETFS_OPTS adds ticketfs mount options. The run turns FUSE over io_uring on
# (/sys/module/fuse/parameters/enable_uring, put back as it was at the end) where the kernel
# has it, and ticketfs runs twice: with its defaults (the io_uring queues), and with
# -o uring=off (requests through /dev/fuse, as fuse2fs's), a column of its own. For the two FUSE filesystems the create/stat/unlink workload runs once more with
# the daemon and the benchmark pinned to one CPU: the difference is what the cross-CPU wakeups
# of FUSE's round trips cost on this machine; the run also measures that cost alone (a thread
# waking another and being woken back, `fsbench pingpong`). Everything runs ROUNDS times, on
# a fresh image each round, the filesystems' order rotating; the table shows medians and every
# round's figure (one pass moved by half on this shared machine).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-4G}          # every image
SEQ=${SEQ:-1G}            # sequential write and read
RAND=${RAND:-256M}        # the random-I/O file
RUNTIME=${RUNTIME:-15}    # seconds of each random workload
FILES=${FILES:-10000}     # create, stat, unlink in one directory
FSYNCS=${FSYNCS:-2000}    # 4 KiB write + fsync, for latency
TREE=${TREE:-2000}        # small files in a tree
MIX=${MIX:-20000}         # rounds of the memres mix
MIX_REPEATS=${MIX_REPEATS:-6}  # runs of the mix, memres=on beside memres=off (even: each mounted first as often)
PARALLEL=${PARALLEL:-4}   # processes making trees at once
ROUNDS=${ROUNDS:-3}       # passes of the small-operation workloads (medians)
WORK=${WORK:-/var/tmp}
OUT=${OUT:-}
for t in fio fuse2fs mkfs.ext4 losetup python3 bc; do
    command -v "$t" >/dev/null || { echo "compare.sh: $t is missing" >&2; exit 2; }
done
cargo build --release --workspace --quiet
cargo build --release --example fsbench --quiet
bin=$PWD/target/release
fsbench=$bin/examples/fsbench
work=$(mktemp -d "$WORK/tkfs-compare.XXXXXX")
mnt=$work/mnt
mkdir -p "$mnt"
pid=
loop=
results=$work/results
: >"$results"

unmount() {
    if mountpoint -q "$mnt"; then umount "$mnt" 2>/dev/null || umount -l "$mnt"; fi
    if [ -n "$pid" ]; then
        # Our own daemon (started here, by PID): it ends once unmounted.
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
    if [ -n "$loop" ]; then losetup -d "$loop"; loop=; fi
    rm -f "$work/image"
}

# The memres mix's two mounts at once, $work/mnt-on and $work/mnt-off; pair_pid[on|off].
declare -A pair_pid=()
unmount_pair() {
    local m
    for m in "${!pair_pid[@]}"; do
        if mountpoint -q "$work/mnt-$m"; then
            umount "$work/mnt-$m" 2>/dev/null || umount -l "$work/mnt-$m"
        fi
        # Our own daemon (started here, by PID): it ends once unmounted.
        for _ in $(seq 100); do kill -0 "${pair_pid[$m]}" 2>/dev/null || break; sleep 0.1; done
        kill "${pair_pid[$m]}" 2>/dev/null || true
        wait "${pair_pid[$m]}" 2>/dev/null || true
        rm -f "$work/image-$m"
        unset "pair_pid[$m]"
    done
}
# mount_pair FIRST SECOND: fresh images mounted with memres=FIRST, then memres=SECOND.
mount_pair() {
    local m
    for m in "$@"; do
        mkdir -p "$work/mnt-$m"
        truncate -s "$SIZE" "$work/image-$m"
        "$bin/mkfs-ticketfs" -s "$SIZE" "$work/image-$m" >/dev/null
        "$bin/ticketfs" "$work/image-$m" "$work/mnt-$m" -f \
            -o "${TICKETFS_OPTS:+$TICKETFS_OPTS,}memres=$m" 2>"$work/daemon-$m.log" &
        pair_pid[$m]=$!
        wait_mounted "$work/mnt-$m" "${pair_pid[$m]}"
    done
}
knob=/sys/module/fuse/parameters/enable_uring
knob_was=
if [ -w "$knob" ]; then
    knob_was=$(cat "$knob")
    echo 1 >"$knob"
fi
cleanup() {
    unmount
    unmount_pair
    rm -rf "$work"
    if [ -n "$knob_was" ]; then
        if [ "$knob_was" = Y ]; then echo 1 >"$knob"; else echo 0 >"$knob"; fi
    fi
}
trap cleanup EXIT

# wait_mounted [MNT PID]: $mnt and $pid unless given.
wait_mounted() {
    local m=${1:-$mnt} p=${2:-$pid}
    for _ in $(seq 200); do
        mountpoint -q "$m" && return 0
        kill -0 "$p" 2>/dev/null || { echo "compare.sh: the daemon died" >&2; exit 1; }
        sleep 0.05
    done
    echo "compare.sh: $m not mounted after 10 s" >&2
    exit 1
}

# mount_fs NAME [ticketfs options]: a fresh image of SIZE mounted on $mnt.
mount_fs() {
    truncate -s "$SIZE" "$work/image"
    case $1 in
    ticketfs*)
        "$bin/mkfs-ticketfs" -s "$SIZE" "$work/image" >/dev/null
        "$bin/ticketfs" "$work/image" "$mnt" -f -o "${TICKETFS_OPTS:+$TICKETFS_OPTS,}${2:-memres=on}" 2>"$work/daemon.log" &
        pid=$!
        wait_mounted
        ;;
    fuse2fs)
        mkfs.ext4 -q -F "$work/image"
        fuse2fs "$work/image" "$mnt" -f 2>"$work/daemon.log" &
        pid=$!
        wait_mounted
        ;;
    ext4)
        mkfs.ext4 -q -F "$work/image"
        loop=$(losetup -f --show "$work/image")
        mount -t ext4 "$loop" "$mnt"
        ;;
    esac
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

record() { echo "$1 $2 $3" >>"$results"; }  # fs metric value

# fio_run FS METRIC FIELD fio-args...: FIELD is read.bw, write.bw (KiB/s) or read.iops...
fio_run() {
    local fs=$1 metric=$2 field=$3
    shift 3
    local v
    v=$(fio --output-format=json --directory="$mnt" --ioengine=psync "$@" |
        python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
rw, what = sys.argv[1].split(".")
v = j[rw][what]
print(v / 1024 if what == "bw" else v)' "$field")
    record "$fs" "$metric" "$v"
}

# fsbench_run FS CMD N: every key=value it prints becomes a metric.
fsbench_run() {
    local fs=$1
    for kv in $("$fsbench" "$2" "$mnt" "$3"); do
        record "$fs" "${kv%%=*}" "${kv#*=}"
    done
}

# fio's streaming and random I/O.
io_workloads() {
    local fs=$1
    # Nothing of the build or the last filesystem still being written back meanwhile.
    sync
    fio_run "$fs" seq_write_MiB_s write.bw --name=seq --filename=seq --rw=write --bs=1M \
        --size="$SEQ" --end_fsync=1
    drop_caches
    fio_run "$fs" seq_read_MiB_s read.bw --name=seq --filename=seq --rw=read --bs=1M --size="$SEQ"
    rm -f "$mnt/seq"
    fio --output-format=json --directory="$mnt" --name=lay --filename=rand --rw=write --bs=1M \
        --size="$RAND" --end_fsync=1 >/dev/null
    fio_run "$fs" rand_write_fsync32_iops write.iops --name=rw --filename=rand --rw=randwrite \
        --bs=4k --size="$RAND" --fsync=32 --runtime="$RUNTIME" --time_based
    drop_caches
    fio_run "$fs" rand_read_iops read.iops --name=rr --filename=rand --rw=randread --bs=4k \
        --size="$RAND" --runtime="$RUNTIME" --time_based
    rm -f "$mnt/rand"
}

# The small-operation workloads.
small_workloads() {
    local fs=$1
    sync
    fsbench_run "$fs" meta "$FILES"
    fsbench_run "$fs" fsync "$FSYNCS"
    fsbench_run "$fs" tree "$TREE"
    # The same tree by PARALLEL processes at once, each in its own directory: wall time.
    local t0 t1 i pids=()
    t0=$(date +%s.%N)
    for i in $(seq "$PARALLEL"); do
        mkdir -p "$mnt/par$i"
        "$fsbench" tree "$mnt/par$i" "$TREE" >/dev/null &
        pids+=($!)
    done
    # Only these (the daemon is a background job of this shell too).
    for i in "${pids[@]}"; do wait "$i"; done
    t1=$(date +%s.%N)
    record "$fs" "tree_x${PARALLEL}_parallel_s" "$(echo "$t1 - $t0" | bc -l)"
}

# one_cpu FS: the create/stat/unlink workload with the daemon and the benchmark on CPU 0.
one_cpu() {
    local fs=$1 kv
    taskset -a -p -c 0 "$pid" >/dev/null
    for kv in $(taskset -c 0 "$fsbench" meta "$mnt/onecpu" "$FILES"); do
        record "$fs" "${kv%%=*}_one_cpu" "${kv#*=}"
    done
}

# ticketfs's own figures at the end of a mount: peak resident size (the table reports the
# largest of all mounts) and the allocator lock's counters.
daemon_figures() {
    record ticketfs daemon_peak_rss_MiB "$(awk '/VmHWM/ {print $2 / 1024}' "/proc/$pid/status")"
    "$bin/ticketfs" stats "$mnt" --json >"$work/stats.json"
    python3 - "$work/stats.json" >>"$results" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print("ticketfs daemon_budget_plus_base_MiB", (j["budget_bytes"] + j["base_bytes"]) / 2**20)
print("ticketfs allocator_lock_taken", j["alloc_lock_taken"])
print("ticketfs allocator_lock_waits", j["alloc_lock_waits"])
print("ticketfs allocator_lock_wait_ms", j["alloc_lock_wait_ms"])
print("ticketfs log_forces_for_busy_blocks", j["busy_forces"])
print("ticketfs io_uring_serving_threads", j.get("uring_threads", 0))
print("ticketfs io_uring_left_sched_idle", j.get("uring_left_idle", 0))
PY
}

# What a wake-up costs here: one byte to and fro between two threads, unpinned and on one CPU.
for r in $(seq "$ROUNDS"); do
    for kv in $("$fsbench" pingpong - 20000); do record machine "${kv%%=*}" "${kv#*=}"; done
    for kv in $(taskset -c 0 "$fsbench" pingpong - 20000); do
        record machine "${kv%%=*}_one_cpu" "${kv#*=}"
    done
done

mount_named() {
    if [ "$1" = ticketfs-dev ]; then mount_fs ticketfs memres=on,uring=off; else mount_fs "$1"; fi
}

fss=(ticketfs ticketfs-dev fuse2fs ext4)
# Every workload ROUNDS times, each filesystem on a fresh image per round; each round starts
# with a different filesystem, so a slow spell of the host does not fall on the same one
# every time.
for r in $(seq "$ROUNDS"); do
    for k in "${!fss[@]}"; do
        fs=${fss[$(((k + r - 1) % ${#fss[@]}))]}
        echo "== $fs (round $r of $ROUNDS)" >&2
        mount_named "$fs"
        io_workloads "$fs"
        small_workloads "$fs"
        case $fs in ticketfs | fuse2fs) one_cpu "$fs" ;; esac
        if [ "$fs" = ticketfs ]; then daemon_figures; fi
        unmount
    done
done
# The daemon's CPU time so far (user and system, all threads), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# memres=on against memres=off: both mounted at once, on fresh images, and `fsbench mixpair`
# runs the mix on them in alternating chunks of 500 rounds, so a slow spell of the host (one
# run of the mix alone moved by 15% either way here) falls on both alike; the figure of a run
# is the median over chunk pairs of on's time over off's. The mount mounted first ran about 2%
# faster in trials by hand whatever its setting, so the order alternates between repeats.
# Each repeat twice: as it is, and with both daemons and the benchmark on CPU 0.
for r in $(seq "$MIX_REPEATS"); do
    if [ $((r % 2)) = 1 ]; then order=(on off); else order=(off on); fi
    for where in "" _one_cpu; do
        echo "== memres=${order[0]} beside memres=${order[1]} mix${where:+ on one CPU} ($r of $MIX_REPEATS)" >&2
        mount_pair "${order[@]}"
        pin=()
        if [ -n "$where" ]; then
            for m in on off; do taskset -a -p -c 0 "${pair_pid[$m]}" >/dev/null; done
            pin=(taskset -c 0)
        fi
        declare -A c0=()
        for m in on off; do c0[$m]=$(cpu_ticks "${pair_pid[$m]}"); done
        for kv in $("${pin[@]}" "$fsbench" mixpair "$work/mnt-on" "$work/mnt-off" "$MIX"); do
            case ${kv%%=*} in
            mixpair_a_rounds_per_s) record ticketfs-memres-on "mix_rounds_per_s$where" "${kv#*=}" ;;
            mixpair_b_rounds_per_s) record ticketfs-memres-off "mix_rounds_per_s$where" "${kv#*=}" ;;
            mixpair_a_over_b_percent) record ticketfs-memres "mix_cost_percent$where" "${kv#*=}" ;;
            esac
        done
        for m in on off; do
            record "ticketfs-memres-$m" "mix_daemon_cpu_us_per_round$where" \
                "$(echo "($(cpu_ticks "${pair_pid[$m]}") - ${c0[$m]}) * 1000000 / $(getconf CLK_TCK) / $MIX" | bc -l)"
        done
        unmount_pair
    done
done

# The same mix counted in the daemon's instructions (deterministic, where the timings above are
# not): benches/memres-cost.sh, when valgrind is here.
if command -v valgrind >/dev/null; then
    echo "== memres cost in instructions (benches/memres-cost.sh)" >&2
    for kv in $(bash benches/memres-cost.sh 2>/dev/null); do record valgrind "${kv%%=*}" "${kv#*=}"; done
fi

python3 - "$results" "$OUT" <<'PY'
import sys
import statistics
runs = {}
for line in open(sys.argv[1]):
    fs, metric, v = line.split()
    runs.setdefault(metric, {}).setdefault(fs, []).append(float(v))
# A figure measured more than once is the median of its runs; the peak resident size is the
# largest of all.
rows = {m: {fs: (max(vs) if m == "daemon_peak_rss_MiB" else statistics.median(vs))
            for fs, vs in v.items()} for m, v in runs.items()}
# Lower is better for latencies and times.
lower = lambda m: m.endswith("_us") or m.endswith("_s") and not m.endswith("_per_s") and not m.endswith("MiB_s")
out = ["| workload | ticketfs | fuse2fs | kernel ext4 | ticketfs / fuse2fs | ticketfs / ext4 "
       "| ticketfs -o uring=off | its / fuse2fs | its / ext4 |",
       "|---|---|---|---|---|---|---|---|---|"]
def ratio(m, a, b):
    if lower(m):
        return b / a if a else 0
    return a / b if b else 0
peers = ("ticketfs", "fuse2fs", "ext4")
for m, v in rows.items():
    if any(p not in v for p in peers):
        continue
    t, f, e = (v[p] for p in peers)
    line = f"| {m} | {t:.1f} | {f:.1f} | {e:.1f} | {ratio(m, t, f):.2f}x | {ratio(m, t, e):.2f} "
    w = v.get("ticketfs-dev")
    line += f"| {w:.1f} | {ratio(m, w, f):.2f}x | {ratio(m, w, e):.2f} |" if w is not None else "| | | |"
    out.append(line)
out.append("")
out.append("Ratios are ticketfs's speed relative to the peer (for times and latencies: the peer's "
           "time divided by ticketfs's), so above 1 means ticketfs is faster. Figures measured in "
           "several rounds are medians; every round's figure follows.")
out.append("")
for m, v in runs.items():
    if all(p in v for p in peers) and any(len(v[p]) > 1 for p in peers):
        each = "; ".join(f"{p} " + ", ".join(f"{x:g}" for x in v[p]) for p in peers)
        out.append(f"- {m} rounds: {each}")
for m in ("create_per_s_one_cpu", "stat_per_s_one_cpu", "unlink_per_s_one_cpu"):
    if m in rows:
        out.append(f"- {m} (daemon and benchmark on CPU 0, median): ticketfs "
                   f"{rows[m].get('ticketfs', 0):.0f}, fuse2fs {rows[m].get('fuse2fs', 0):.0f}")
rt = rows.get("round_trip_us", {}).get("machine")
rt1 = rows.get("round_trip_us_one_cpu", {}).get("machine")
if rt and rt1:
    out.append(f"- this machine's wake-ups: a thread waking another and being woken back (socket "
               f"pair, median of {len(runs['round_trip_us']['machine'])} runs) takes {rt:.1f} us "
               f"across CPUs, {rt1:.1f} us on one CPU; every synchronous FUSE request is such an "
               f"exchange between the caller and a daemon thread")
for m in ("daemon_peak_rss_MiB", "daemon_budget_plus_base_MiB", "allocator_lock_taken",
          "allocator_lock_waits", "allocator_lock_wait_ms", "log_forces_for_busy_blocks",
          "io_uring_serving_threads", "io_uring_left_sched_idle"):
    if m in rows:
        out.append(f"- {m}: {rows[m]['ticketfs']:.1f}")
for where, name in (("", ""), ("_one_cpu", " with the daemons and the benchmark on CPU 0")):
    key = "mix_rounds_per_s" + where
    on = rows.get(key, {}).get("ticketfs-memres-on")
    off = rows.get(key, {}).get("ticketfs-memres-off")
    costs = runs.get("mix_cost_percent" + where, {}).get("ticketfs-memres")
    if on and off and costs:
        each = ", ".join(f"{x:.1f}%" for x in costs)
        out.append(f"- create/write/unlink mix{name}, memres=on and memres=off mounted at once and "
                   f"run in alternating chunks, {len(costs)} runs: cost of memres (median over "
                   f"runs of the median over chunk pairs of on's time over off's) "
                   f"{statistics.median(costs):.1f}% (runs: {each}); rounds/s, median of runs: "
                   f"memres=on {on:.0f}, memres=off {off:.0f}")
    key = "mix_daemon_cpu_us_per_round" + where
    con = rows.get(key, {}).get("ticketfs-memres-on")
    coff = rows.get(key, {}).get("ticketfs-memres-off")
    if con and coff:
        out.append(f"- the same mix{name}, the daemon's CPU time per round (median): memres=on "
                   f"{con:.1f} us, memres=off {coff:.1f} us, cost of memres {100 * (con / coff - 1):.1f}%")
vg = {m: rows[m]["valgrind"] for m in rows if "valgrind" in rows[m]}
if vg:
    out.append(f"- the same mix in instructions the daemon executes per round (callgrind, "
               f"benches/memres-cost.sh): memres=on {vg['memres_on_instructions_per_round']:.0f}, "
               f"memres=off {vg['memres_off_instructions_per_round']:.0f}, cost of memres "
               f"{vg['memres_cost_percent']:.2f}%")
text = "\n".join(out)
print(text)
if sys.argv[2]:
    open(sys.argv[2], "w").write(text + "\n")
PY
