#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: Debian's fuse3 (fusermount3, mount.fuse3),
# stress-ng (the cgroup stress test), man-db (the manual pages are rendered) and acl
# (setfacl, getfacl: the POSIX ACL tests), attr (getfattr), the external
# suites pjdfstest and fsx from crates.io, the test user pjdfstest switches to, and FUSE over
# io_uring where the kernel has it.
set -euo pipefail
missing=()
for pkg in fuse3 stress-ng man-db acl attr; do
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
# /dev/fuse 0666, as Debian's udev rule for fuse3 makes it (a machine without udev leaves it
# 0600): users other than root mount through fusermount3, which opens it as the user.
if [ -c /dev/fuse ]; then
    chmod 0666 /dev/fuse
fi
# FUSE over io_uring (Linux 6.14+ with CONFIG_FUSE_IO_URING): off by default in the kernel; on,
# every mount of the suite is served through the io_uring queues (src/ring), and
# tests/transport.rs compares them with /dev/fuse (-o uring=off).
knob=/sys/module/fuse/parameters/enable_uring
if [ -w "$knob" ]; then
    echo 1 > "$knob"
fi
