#!/usr/bin/env bash
# The whole test suite: installs the test dependencies, then runs every test in the `ci` profile
# (release optimisation with debug assertions and overflow checks on, see Cargo.toml), and closes
# with one summary line totalling every test binary's result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
log=$(mktemp)
# Tests that cannot run here say so in this file (tests/common `skip`); the summary counts them.
export TICKETFS_SKIPS=$(mktemp)
trap 'rm -f "$log" "$TICKETFS_SKIPS"' EXIT
# The tools' binaries (mkfs, fsck) are used by the tests, not only built for them.
cargo build --profile ci --workspace
# The benchmarks once each, in criterion's test mode: they must keep building and running.
cargo test --profile ci --benches 2>&1 | tee "$log"
cargo test --profile ci --workspace 2>&1 | tee -a "$log"
total() { grep -E '^test result:' "$log" | grep -oE "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
skipped=$(wc -l <"$TICKETFS_SKIPS")
if [ "$skipped" -gt 0 ]; then
    echo "skipped on this machine (counted as passed by cargo):"
    sed 's/^/  /' "$TICKETFS_SKIPS"
fi
echo "summary: $(total passed) passed, $(total failed) failed, $skipped skipped"
