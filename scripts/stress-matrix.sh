#!/usr/bin/env bash
# The stress matrix of docs/stress.md: for each limit L and memres=on/off, each workload, one
# ticketfs-stress run (daemon in a memory cgroup of L); then stress-ng with 10 crash rounds;
# then docs/stress.md and docs/stress/*.svg from the results.
#
#   XFSTESTS_DIR=/path/to/built/xfstests bash scripts/stress-matrix.sh [RUNS_DIR]
#   LIMITS="8M" WORKLOADS="stress-ng fsx" bash scripts/stress-matrix.sh   # a part of it
#
# fsstress needs a built xfstests checkout (XFSTESTS_DIR= or FSSTRESS=); without one that
# workload is skipped. A run whose acceptance fails is recorded, not fatal.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-/var/tmp/ticketfs-stress-matrix}
LIMITS=${LIMITS:-"8M 32M 64M 256M"}
WORKLOADS=${WORKLOADS:-"stress-ng fsx storm fsstress"}
CRASH_ROUNDS=${CRASH_ROUNDS:-10}
cargo build --release --workspace --quiet
bin=target/release/ticketfs-stress
TICKETFS_COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo "+changes")
export TICKETFS_COMMIT
mkdir -p "$runs"
args_for() {
    case $1 in
    stress-ng) echo "--seconds 60" ;;
    fsx) echo "--fsx-ops 15000" ;;
    storm) echo "--storm-files 50000 --seconds 900" ;;
    fsstress) echo "--fsstress-ops 20000 --seconds 900" ;;
    esac
}
for L in $LIMITS; do
    for m in on off; do
        for w in $WORKLOADS; do
            if [ "$w" = fsstress ] && [ -z "${XFSTESTS_DIR:-}${FSSTRESS:-}" ]; then
                echo "skipping fsstress: no XFSTESTS_DIR or FSSTRESS" >&2
                continue
            fi
            d="$runs/$w-$L-$m"
            rm -rf "$d"
            # shellcheck disable=SC2046
            "$bin" --limit "$L" --memres "$m" --workload "$w" $(args_for "$w") --out "$d" || true
        done
    done
done
if [ "$CRASH_ROUNDS" -gt 0 ]; then
    d="$runs/crash-stress-ng-8M-on"
    rm -rf "$d"
    "$bin" --limit 8M --memres on --workload stress-ng --seconds $((CRASH_ROUNDS * 20 + 20)) \
        --crash-rounds "$CRASH_ROUNDS" --out "$d" || true
fi
"$bin" report "$runs" docs/stress.md docs/stress "bash scripts/stress-matrix.sh"
echo "wrote docs/stress.md"
