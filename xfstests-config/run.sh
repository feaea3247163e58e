#!/usr/bin/env bash
# Runs fstests against ticketfs: xfstests-config/run.sh XFSTESTS_DIR [check arguments...]
#   e.g. xfstests-config/run.sh /work/ext/xfstests -g quick
#        TICKETFS_OPTS=uring=off xfstests-config/run.sh /work/ext/xfstests -g quick
# XFSTESTS_DIR is an fstests checkout already built with its own `make` (nothing of fstests is
# in this repository). Installs ticketfs (scripts/install.sh), makes the fstests users, formats
# the test and scratch images, runs ./check with local.config and the exclude list, then
# unmounts and runs fsck.ticketfs -n on both images. Results stay in XFSTESTS_DIR/results.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
xfstests=${1:?usage: run.sh XFSTESTS_DIR [check arguments...]}
shift
[ -x "$xfstests/check" ] && [ -x "$xfstests/ltp/fsstress" ] || {
    echo "run.sh: $xfstests is not a built fstests checkout (run make there)" >&2
    exit 2
}
WORK=${TICKETFS_XFSTESTS_WORK:-/var/tmp/ticketfs-xfstests}
SIZE=${SIZE:-4G}
export TICKETFS_XFSTESTS_WORK=$WORK
# PREFIX: where ticketfs is installed for the run; TICKETFS_OPTS: more mount options, e.g.
# uring=off. mkfs and fsck come from PREFIX, but the daemon fstests mounts does not: mount(8)
# runs mount.fuse3 with a fixed PATH, /usr/local/sbin first, so it is /usr/local/sbin/ticketfs
# whatever PREFIX says. To run a build of its own beside other installs, run this script in a
# private mount namespace with PREFIX bound over /usr/local/sbin:
#   unshare -m --propagation private bash -c \
#     'mkdir -p P && mount --bind P /usr/local/sbin && PREFIX=P bash xfstests-config/run.sh ...'
# (PREFIX must exist before the bind; the namespace keeps copies of other mounts until it ends).
PREFIX=${PREFIX:-/usr/local/sbin}
export TICKETFS_OPTS=${TICKETFS_OPTS:-}
PREFIX=$PREFIX NO_BUILD=${NO_BUILD:-} bash "$repo/scripts/install.sh" >/dev/null
# Tools fstests calls: attr (attr, getfattr, setfattr) and acl (chacl), without which 34 tests
# of -g quick are "not run", and gawk (its scripts use asort; Debian's default awk is mawk),
# without which generic/062 fails.
for pkg in attr acl gawk; do
    dpkg -s "$pkg" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg" >/dev/null
done
export PATH="$PREFIX:$PATH"
for u in fsgqa fsgqa2 123456-fsgqa; do
    id "$u" >/dev/null 2>&1 || useradd -m "$u"
done
getent group fsgqa >/dev/null || groupadd fsgqa
cleanup() {
    for d in "$WORK/test" "$WORK/scratch"; do
        if mountpoint -q "$d"; then umount "$d" || umount -l "$d" || true; fi
    done
}
trap cleanup EXIT
cleanup
mkdir -p "$WORK/test" "$WORK/scratch"
for img in test scratch; do
    rm -f "$WORK/$img.img"
    mkfs.ticketfs -s "$SIZE" "$WORK/$img.img" >/dev/null
done
cd "$xfstests"
status=0
# Tests that cannot pass on this machine whatever the filesystem, added to the exclude list
# with the reason printed.
exclude="$WORK/exclude"
cp "$here/exclude" "$exclude"
if ! bash -c 'ulimit -f 100 && ulimit -f unlimited' 2>/dev/null; then
    # Without CAP_SYS_RESOURCE (a container) a lowered file-size limit cannot be raised again
    # (394, 564), nor the open-files limit above the hard one (530 and 531, which raise it):
    # these print bash's error in their output.
    echo "run.sh: no CAP_SYS_RESOURCE here: excluding generic/394, generic/530, generic/531 and generic/564" >&2
    printf '%s\n' generic/394 generic/530 generic/531 generic/564 >>"$exclude"
fi
HOST_OPTIONS="$here/local.config" ./check -E "$exclude" "$@" || status=$?
cleanup
for img in test scratch; do
    echo "fsck.ticketfs -n $img.img: $(fsck.ticketfs -n "$WORK/$img.img" | tail -1)"
done
exit $status
