#!/usr/bin/env bash
# Every one- and two-operation workload of tests/ace.rs (CrashMonkey/ACE's seq-1 and seq-2 over
# ticketfs's operations, each followed by fsync, fdatasync or sync), every flush point and
# ACE_REORDERINGS (default here 6) random subsets and orders of the writes after it: prints the
# workloads, crash states and inconsistent states. The suite runs all of seq-1 and a sample of
# seq-2; this runs all of both (about 20 minutes on 2 CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
export ACE_FULL=1 ACE_REORDERINGS=${ACE_REORDERINGS:-6}
cargo test --release --test ace -- --nocapture --test-threads=2 2>&1 | grep -E '^ace |^  |test result'
