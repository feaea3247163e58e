#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: Debian's fuse3 (fusermount3, mount.fuse3)
# and stress-ng (the cgroup stress test), the external suites pjdfstest and fsx from crates.io,
# and the test user pjdfstest switches to.
set -euo pipefail
missing=()
for pkg in fuse3 stress-ng; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"
for tool in pjdfstest fsx; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        cargo install --quiet --locked "$tool"
    fi
done
if ! id tkfs-test >/dev/null 2>&1; then
    useradd -U -M -s /usr/sbin/nologin tkfs-test
fi
