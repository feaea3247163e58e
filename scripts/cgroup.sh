# Memory cgroup helpers for the benchmark and stress scripts (sourced, not run).
#
# cg_create NAME LIMIT   creates a memory cgroup with the limit (v2 where the memory controller
#                        is enabled, else v1) and sets CG_DIR and CG_VERSION.
# cg_run CMD...          replaces the calling (sub)shell with CMD inside the cgroup (the shell
#                        enters it, then execs CMD, so the process is in the cgroup before it
#                        allocates anything): call it as `cg_run CMD &` or `(cg_run CMD)`.
# cg_peak / cg_usage     peak and current usage in bytes.
# cg_oom_kills           OOM kills in the cgroup so far.
# cg_remove              kills what is left in it and removes it.

cg_v2_root() {
    local m
    m=$(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") break }
             $(i + 1) == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
    [ -n "$m" ] && grep -qw memory "$m/cgroup.controllers" 2>/dev/null && echo "$m"
}

cg_v1_root() {
    awk '{ for (i = 7; i <= NF; i++) if ($i == "-") break }
         $(i + 1) == "cgroup" && $(i + 3) ~ /(^|,)memory(,|$)/ { print $5; exit }' /proc/self/mountinfo
}

cg_create() {
    local name=$1 limit=$2 root
    if root=$(cg_v2_root); then
        CG_VERSION=v2
        CG_DIR=$root/$name
        grep -qw memory "$root/cgroup.subtree_control" || echo +memory > "$root/cgroup.subtree_control"
        mkdir -p "$CG_DIR"
        echo "$limit" > "$CG_DIR/memory.max"
        echo 0 > "$CG_DIR/memory.swap.max" 2>/dev/null || true
    else
        root=$(cg_v1_root)
        [ -n "$root" ] || { echo "no memory cgroup controller on this machine" >&2; return 1; }
        CG_VERSION=v1
        CG_DIR=$root/$name
        mkdir -p "$CG_DIR"
        echo "$limit" > "$CG_DIR/memory.limit_in_bytes"
        echo "$limit" > "$CG_DIR/memory.memsw.limit_in_bytes" 2>/dev/null || true
    fi
}

cg_run() {
    exec sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG_DIR" "$@"
}

cg_peak() {
    if [ "$CG_VERSION" = v2 ]; then cat "$CG_DIR/memory.peak" 2>/dev/null || echo 0
    else cat "$CG_DIR/memory.max_usage_in_bytes"; fi
}

cg_usage() {
    if [ "$CG_VERSION" = v2 ]; then cat "$CG_DIR/memory.current"
    else cat "$CG_DIR/memory.usage_in_bytes"; fi
}

cg_oom_kills() {
    if [ "$CG_VERSION" = v2 ]; then awk '$1 == "oom_kill" { print $2 }' "$CG_DIR/memory.events"
    else awk '$1 == "oom_kill" { print $2 }' "$CG_DIR/memory.oom_control"; fi
}

cg_remove() {
    [ -n "${CG_DIR:-}" ] && [ -d "$CG_DIR" ] || return 0
    local p
    for p in $(cat "$CG_DIR/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do rmdir "$CG_DIR" 2>/dev/null && break; sleep 0.1; done
    CG_DIR=
}
