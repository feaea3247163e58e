#!/usr/bin/env bash
# The long fsx run (issue 3): 1,000,000 operations with truncate, fallocate and hole punching
# (tests/config/fsx.toml) on a fresh ticketfs mount, then fsck. Prints fsx's verdict.
# Usage: bash scripts/fsx-long.sh [OPS=1000000] [SEED=1]
set -euo pipefail
cd "$(dirname "$0")/.."
OPS=${1:-1000000}
SEED=${2:-1}
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace --quiet
work=$(mktemp -d)
mkdir -p "$work/mnt"
cleanup() { umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
./target/release/mkfs-ticketfs -s 2G "$work/image" >/dev/null
./target/release/ticketfs "$work/image" "$work/mnt"
start=$(date +%s)
fsx -f tests/config/fsx.toml -N "$OPS" -S "$SEED" -P "$work" "$work/mnt/fsx-file" 2>&1 | tail -1
echo "fsx: $OPS operations in $(( $(date +%s) - start )) s"
umount "$work/mnt"
for _ in $(seq 100); do flock -n "$work/image" true && break; sleep 0.1; done
./target/release/fsck-ticketfs "$work/image"
