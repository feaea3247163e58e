#!/usr/bin/env bash
# Builds ticketfs and installs ticketfs, mkfs.ticketfs and fsck.ticketfs into $PREFIX
# (default /usr/local/sbin), so that `mkfs -t ticketfs`, `fsck -t ticketfs` and
# `mount -t fuse.ticketfs IMAGE DIR` (through Debian's mount.fuse3) work.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local/sbin}
# NO_BUILD=1: install what is already built in BIN_DIR (default target/release; the test suite
# installs its own build, target/ci).
BIN_DIR=${BIN_DIR:-target/release}
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --workspace --quiet
fi
mkdir -p "$PREFIX"
install -m 0755 "$BIN_DIR/ticketfs" "$PREFIX/ticketfs"
install -m 0755 "$BIN_DIR/mkfs-ticketfs" "$PREFIX/mkfs.ticketfs"
install -m 0755 "$BIN_DIR/fsck-ticketfs" "$PREFIX/fsck.ticketfs"
echo "installed ticketfs, mkfs.ticketfs, fsck.ticketfs into $PREFIX"
