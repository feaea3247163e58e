#!/usr/bin/env bash
# The whole test suite: installs the test dependencies, then runs every test in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
# The tools' binaries (mkfs, fsck) are used by the tests, not only built for them.
cargo build --release --workspace
cargo test --release --workspace
# The benchmarks once each, in criterion's test mode: they must keep building and running.
cargo test --release --benches
