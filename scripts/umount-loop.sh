#!/usr/bin/env bash
# Durability across unmount, as issue 17 reported it lost: N cycles (1000 by default) of
#   mount; write 64 KiB; zero-range 4 x 4 KiB; mkdir; rename the file into it; umount;
#   fsck.ticketfs -n at once; mount; check the cycle's file; umount
# and at the end every cycle's file once more,
# through the io_uring queues where the kernel has them (TRANSPORT=uring, the default) or
# through /dev/fuse (TRANSPORT=devfuse), with MOUNT_OPTS added. Prints, at the end:
#   cycles N lost L locked K unclean U
# lost: a file written before a clean unmount missing or different after it; locked: fsck
# finding the image still held by its daemon the moment umount returned; unclean: fsck finding
# anything else. Exit 1 unless all three are 0. Needs root, xfs_io (xfsprogs) and a built tree.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
bin=target/release
[ -x "$bin/ticketfs" ] || cargo build --release --workspace --quiet
command -v xfs_io >/dev/null || {
    echo "umount-loop.sh: xfs_io (Debian package xfsprogs) is needed" >&2
    exit 2
}
opts=${MOUNT_OPTS:-}
if [ "${TRANSPORT:-uring}" = devfuse ]; then
    opts=${opts:+$opts,}uring=off
fi
work=$(mktemp -d /var/tmp/ticketfs-umount-loop.XXXXXX)
img=$work/image
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() {
    if mountpoint -q "$mnt"; then umount "$mnt" || umount -l "$mnt" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
"$bin/mkfs-ticketfs" -s 512M "$img" >/dev/null
mount_it() { "$bin/ticketfs" "$img" "$mnt" ${opts:+-o "$opts"}; }
# umount, again after a moment while it fails with "target is busy": another process's path
# walk or statfs (df, findmnt, a test suite beside this one) holds the mount for an instant, as
# it would an ext4 mount. Each retry is counted and printed.
busy=0
umount_it() {
    local tries=0
    until umount "$mnt" 2>"$work/umount.err"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 50 ] || ! grep -q busy "$work/umount.err"; then
            cat "$work/umount.err" >&2
            return 1
        fi
        busy=$((busy + 1))
        sleep 0.1
    done
}
expected=$(mktemp -p "$work")
head -c 65536 /dev/zero | tr '\0' '\315' >"$work/pattern"
lost=0 locked=0 unclean=0
for i in $(seq 1 "$N"); do
    mount_it
    f=$mnt/f$i
    xfs_io -f -c "pwrite -S 0xcd 0 65536" "$f" >/dev/null
    for k in $(seq 0 15); do
        # Zero every fourth block, as generic/033 zeroes ranges of a written file.
        [ $((k % 4)) -eq 1 ] && xfs_io -c "fzero $((k * 4096)) 4096" "$f"
    done
    mkdir "$mnt/d$i"
    mv "$f" "$mnt/d$i/f"
    sum=$(md5sum <"$mnt/d$i/f" | cut -d' ' -f1)
    echo "d$i/f $sum" >>"$expected"
    umount_it
    rc=0
    "$bin/fsck-ticketfs" -n "$img" >"$work/fsck.out" 2>&1 || rc=$?
    case $rc in
    0) ;;
    8) locked=$((locked + 1)) ;;
    *)
        unclean=$((unclean + 1))
        echo "cycle $i: fsck.ticketfs -n exit $rc: $(tail -3 "$work/fsck.out")" >&2
        ;;
    esac
    mount_it
    got=$(md5sum <"$mnt/d$i/f" 2>/dev/null | cut -d' ' -f1 || true)
    if [ "$got" != "$sum" ]; then
        lost=$((lost + 1))
        echo "cycle $i: d$i/f lost or changed after the clean unmount" >&2
    fi
    umount_it
done
# At the end, every cycle's file once more (a later cycle must not have lost an earlier one).
mount_it
while read -r name want; do
    got=$(md5sum <"$mnt/$name" 2>/dev/null | cut -d' ' -f1 || true)
    if [ "$got" != "$want" ]; then
        lost=$((lost + 1))
        echo "at the end: $name lost or changed" >&2
    fi
done <"$expected"
umount_it
echo "cycles $N lost $lost locked $locked unclean $unclean (umount retried $busy times: busy)"
[ "$lost" -eq 0 ] && [ "$locked" -eq 0 ] && [ "$unclean" -eq 0 ]
