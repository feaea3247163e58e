#!/usr/bin/env bash
# The whole test suite: installs the test dependencies, then runs every test in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --release --workspace
