#!/usr/bin/env bash
# Build (once) the Debian bookworm root filesystem the systemd tests boot in podman: minbase plus
# systemd as init, dbus and python3-venv, as a tar that `podman import` takes. Cached: the tar is
# only rebuilt when the package list below changes (its name carries a hash of that list).
#
#   scripts/systemd-rootfs.sh [CACHE_DIR]     prints the tar's path (default CACHE_DIR below)
#
# Packages come from this machine's apt sources (/etc/apt/sources.list.d/*.sources or
# /etc/apt/sources.list), so it works wherever apt-get does, with no other network access.
set -euo pipefail

CACHE_DIR=${1:-/var/cache/embed-launcher-ci}
SUITE=bookworm
# procps: ps/pgrep for whoever debugs a failed run inside the container.
PACKAGES=systemd,systemd-sysv,dbus,python3,python3-venv,procps

die() {
    echo "systemd-rootfs: $*" >&2
    exit 2
}

stamp=$(printf '%s %s\n' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)
tar_path=$CACHE_DIR/systemd-$SUITE-$stamp.tar
if [[ -s $tar_path ]]; then
    echo "$tar_path"
    exit 0
fi

command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (apt-get install -y mmdebstrap)."
mkdir -p "$CACHE_DIR"
sources=()
shopt -s nullglob
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -s $f ]] && sources+=("$f")
done
((${#sources[@]})) || die "no apt sources found under /etc/apt."

tmp=$(mktemp "$tar_path.XXXXXX")
trap 'rm -f "$tmp"' EXIT
# Progress to stderr; stdout carries only the path, for callers.
mmdebstrap --quiet --variant=minbase --include="$PACKAGES" --format=tar \
    "$SUITE" "$tmp" "${sources[@]}" >&2
mv -f "$tmp" "$tar_path"
trap - EXIT
echo "$tar_path"
