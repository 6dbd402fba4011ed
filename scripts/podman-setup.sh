#!/usr/bin/env bash
# Install and configure podman for the container tests (CI and developers), as root.
#
#   eval "$(scripts/podman-setup.sh)"      install if needed, write the config, export its env
#   scripts/podman-setup.sh --check        only report whether podman works with that config
#
# Idempotent and quiet: packages come from Debian (podman, and runc: crun 1.8 refuses hybrid
# cgroup hosts), and are installed only when missing. The configuration lives in files under
# $PODMAN_CI_DIR (default /var/lib/embed-launcher-ci/podman), never in /etc/containers, and is
# selected with CONTAINERS_CONF and CONTAINERS_STORAGE_CONF: the lines printed on stdout, also saved
# in $PODMAN_CI_DIR/env for `source`. tests/containers/podman.py finds that file by itself.
#
# What the config says, and why (these machines are themselves containers):
#   runtime runc, cgroup manager cgroupfs       no systemd to ask for cgroups
#   storage driver vfs                          no overlay mounts inside the sandbox
#   host network                                no netavark/CNI bridges; 127.0.0.1 is shared
#   nofile = the hard limit, nproc = 8192       the sandbox cannot raise them (nor set nproc to
#                                               its own hard limit: runc then fails with EPERM)
#   events and logs in files                    no journald
set -euo pipefail

DIR=${PODMAN_CI_DIR:-/var/lib/embed-launcher-ci/podman}
# Run-time state belongs on a tmpfs (podman detects reboots by its absence).
RUNROOT=/run/embed-launcher-ci/podman
NPROC=8192
PACKAGES=(podman runc conmon catatonit)

log() { echo "podman-setup: $*" >&2; }

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) != 0 ]]; then
        log "missing ${missing[*]}; run as root to install them"
        exit 2
    fi
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Write $2 to $1 only when it differs, so a running podman never sees a half-written file.
write_if_changed() {
    if [[ ! -f $1 ]] || [[ $(cat "$1") != "$2" ]]; then
        printf '%s\n' "$2" >"$1.tmp"
        mv "$1.tmp" "$1"
    fi
}

write_config() {
    local nofile
    nofile=$(ulimit -Hn)
    [[ $nofile == unlimited ]] && nofile=1048576
    mkdir -p "$DIR/storage"
    write_if_changed "$DIR/containers.conf" "# Written by scripts/podman-setup.sh; edits are overwritten.
[containers]
netns = \"host\"
default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$NPROC:$NPROC\"]
log_driver = \"k8s-file\"
pids_limit = 0

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
"
    write_if_changed "$DIR/storage.conf" "# Written by scripts/podman-setup.sh; edits are overwritten.
[storage]
driver = \"vfs\"
graphroot = \"$DIR/storage\"
runroot = \"$RUNROOT\"
"
    write_if_changed "$DIR/env" "export CONTAINERS_CONF=$DIR/containers.conf
export CONTAINERS_STORAGE_CONF=$DIR/storage.conf"
}

check() {
    # shellcheck disable=SC1091
    source "$DIR/env"
    if ! out=$(podman info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}' 2>&1); then
        log "podman does not work with $DIR/containers.conf: $out"
        exit 1
    fi
    log "podman $(podman version --format '{{.Client.Version}}') ok ($out)"
}

case ${1:-} in
    --check) check ;;
    "")
        install_packages
        write_config
        check
        cat "$DIR/env"
        ;;
    *) log "usage: $0 [--check]"; exit 2 ;;
esac
