#!/usr/bin/env bash
# Build (once) the cached Debian 12 root the end-to-end tests boot:
#   tests/e2e/build-root.sh [CACHE_DIR]     (default /var/cache/waagent-guard-e2e)
# The root has systemd, dbus, python3, curl, iproute2 and Debian's real `waagent`
# package. Packages are downloaded with network, then installed with none
# (`unshare --net`) behind a policy-rc.d that forbids starting anything, so the
# agent never runs on this host. The agent unit gets a drop-in clearing
# ConditionVirtualization= so it starts inside systemd-nspawn.
# The finished root is reused while its stamp matches RECIPE below.
set -euo pipefail
RECIPE="wg-e2e-root v2: bookworm minbase systemd dbus python3 procps curl iproute2 waagent provisioning-disabled"
cache=${1:-/var/cache/waagent-guard-e2e}
mirror=${WG_E2E_MIRROR:-http://deb.debian.org/debian}
root="$cache/root"
stamp="$root/.wg-e2e-recipe"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$RECIPE" ]; then
    echo "e2e root: reusing $root"
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "build-root.sh: must run as root (debootstrap, chroot)" >&2; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$RECIPE" ]; then
    exit 0  # built by a concurrent run while we waited for the lock
fi

work="$cache/root.building"
rm -rf "$work"
echo "e2e root: debootstrap bookworm into $work (about a minute)"
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,python3,procps,curl,iproute2,ca-certificates \
    bookworm "$work" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 40 "$cache/debootstrap.log" >&2; exit 1; }

cleanup() {
    umount "$work/proc" 2>/dev/null || true
    rm -f "$work/usr/sbin/policy-rc.d"
}
trap cleanup EXIT
mount -t proc proc "$work/proc"
printf '#!/bin/sh\nexit 101\n' >"$work/usr/sbin/policy-rc.d"
chmod 0755 "$work/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$work/etc/resolv.conf"

echo "e2e root: downloading waagent"
chroot "$work" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    apt-get -qq update
chroot "$work" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    apt-get -qq install --download-only -y waagent
echo "e2e root: installing waagent with no network"
unshare --net chroot "$work" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-download waagent >/dev/null

mkdir -p "$work/etc/systemd/system/walinuxagent.service.d"
cat >"$work/etc/systemd/system/walinuxagent.service.d/e2e-container.conf" <<'UNIT'
# e2e only: the stock unit refuses to start outside Hyper-V.
[Unit]
ConditionVirtualization=
UNIT
# No cloud-init here: with provisioning disabled the daemon goes on past the
# provisioning wait and runs commands (logged as VERBOSE lines when
# Logs.Verbose=y), then waits forever for a route: the container has only lo.
sed -i 's/^Provisioning.Agent=.*/Provisioning.Agent=disabled/' "$work/etc/waagent.conf"
grep -q '^Provisioning.Agent=disabled$' "$work/etc/waagent.conf"
echo "wg-e2e" >"$work/etc/hostname"
: >"$work/etc/machine-id"
: >"$work/etc/resolv.conf"
chroot "$work" apt-get -qq clean
rm -rf "$work/var/lib/apt/lists/"*
dpkg-query --admindir="$work/var/lib/dpkg" -W -f='${Version}' waagent >"$work/.wg-e2e-waagent-version"
cleanup
trap - EXIT
echo "$RECIPE" >"$work/.wg-e2e-recipe"
rm -rf "$root"
mv "$work" "$root"
echo "e2e root: ready at $root (waagent $(cat "$root/.wg-e2e-waagent-version"))"
