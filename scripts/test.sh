#!/usr/bin/env bash
# The whole test suite: installs the test dependencies, then runs every test in the `ci` profile
# (release optimisation with debug assertions and overflow checks on, see Cargo.toml), and closes
# with one summary line totalling every test binary's result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The tools' binaries (mkfs, fsck) are used by the tests, not only built for them.
cargo build --profile ci --workspace
# The benchmarks once each, in criterion's test mode: they must keep building and running.
cargo test --profile ci --benches 2>&1 | tee "$log"
cargo test --profile ci --workspace 2>&1 | tee -a "$log"
total() { grep -E '^test result:' "$log" | grep -oE "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
echo "summary: $(total passed) passed, $(total failed) failed"
