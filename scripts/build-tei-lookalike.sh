#!/usr/bin/env bash
# Build the TEI-lookalike base image for the image tests, from Debian packages only.
#
#   scripts/build-tei-lookalike.sh [--tag TAG]      (run as root; podman configured: scripts/podman-setup.sh)
#
# It mirrors the runtime stage of TEI v1.9.3's CPU Dockerfile (debian bookworm, the same packages,
# ENV, ENTRYPOINT and CMD, no python3) with the project's TEI stand-in, tests/fake_tei*.py packed
# as a zipapp, in /usr/local/bin/text-embeddings-router. It is tagged like the real base
# (ghcr.io/huggingface/text-embeddings-inference:cpu-1.9.3) so docker/Dockerfile builds unchanged
# with --pull=never. The stand-in's interpreter is /usr/bin/python3, which only the launcher image
# installs: the base alone cannot run it, just as it could not run a Python launcher.
#
# The rootfs (mmdebstrap, minbase) is cached in $LOOKALIKE_CACHE (default
# /var/cache/embed-launcher-ci/tei-lookalike) under a hash of its inputs; the image is rebuilt only
# when the rootfs or the stand-in changed. This machine's package-index configuration (apt sources
# and Acquire options, pip's config, locally added CA certificates) is baked into the rootfs, so the
# launcher build's own apt-get and pip work here; docker/Dockerfile stays as users get it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TAG=ghcr.io/huggingface/text-embeddings-inference:cpu-1.9.3
if [[ ${1:-} == --tag ]]; then
    TAG=${2:?--tag needs a value}
fi
CACHE=${LOOKALIKE_CACHE:-/var/cache/embed-launcher-ci/tei-lookalike}
SUITE=bookworm
# TEI v1.9.3 Dockerfile, stage `base`: apt-get install --no-install-recommends these.
PACKAGES=libomp-dev,ca-certificates,libssl-dev,curl
# Bump when build_rootfs changes what it makes: the cached rootfs is keyed on it.
RECIPE=1

log() { echo "lookalike: $*" >&2; }

need_tools() {
    local missing=()
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    command -v cc >/dev/null || missing+=(gcc libc6-dev)
    command -v podman >/dev/null || { log "podman is not installed: run scripts/podman-setup.sh"; exit 2; }
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Locally added CA certificates (regular files in /etc/ssl/certs, not Debian's symlinks).
local_cas() {
    find /etc/ssl/certs -maxdepth 1 -type f -name '*.pem' | sort
    find /usr/local/share/ca-certificates -type f -name '*.crt' 2>/dev/null | sort
}

# apt.conf.d snippets that only configure fetching (Acquire::..., no hooks), e.g. for a snapshot mirror.
apt_fetch_options() {
    local f
    for f in /etc/apt/apt.conf.d/*; do
        grep -q '^[[:space:]]*Acquire::' "$f" && ! grep -q 'Invoke' "$f" && echo "$f"
    done
    return 0
}

inputs_hash() {
    {
        echo "$SUITE $PACKAGES $RECIPE"
        cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true
        local_cas | xargs -r cat
        apt_fetch_options | xargs -r cat
        cat /etc/pip.conf 2>/dev/null || true
    } | sha256sum | cut -c1-16
}

# The stub TEI preloads (LD_PRELOAD): the real one makes MKL believe it runs on an Intel CPU.
build_fakeintel() {
    printf 'int mkl_serv_intel_cpu_true(void) { return 1; }\n' >"$1/fakeintel.c"
    cc -shared -fPIC -O2 -o "$1/libfakeintel.so" "$1/fakeintel.c"
}

build_rootfs() {
    local out=$1 work
    work=$(mktemp -d)
    build_fakeintel "$work"
    local sources=/etc/apt/sources.list.d/debian.sources
    [[ -f $sources ]] || sources=/etc/apt/sources.list
    log "mmdebstrap $SUITE minbase with $PACKAGES (a minute or two)"
    local hooks=(
        --customize-hook="install -m 0755 $work/libfakeintel.so \"\$1/usr/local/libfakeintel.so\""
        --customize-hook="rm -f \"\$1\"/etc/apt/sources.list; cp $sources \"\$1/etc/apt/sources.list.d/\""
    )
    local f
    for f in $(apt_fetch_options); do
        hooks+=(--customize-hook="cp $f \"\$1/etc/apt/apt.conf.d/\"")
    done
    for f in $(local_cas); do
        hooks+=(--customize-hook="cp $f \"\$1/usr/local/share/ca-certificates/$(basename "${f%.*}").crt\"")
    done
    if [[ -f /etc/pip.conf ]]; then
        hooks+=(--customize-hook="cp /etc/pip.conf \"\$1/etc/pip.conf\"")
    fi
    hooks+=(
        --customize-hook="chroot \"\$1\" update-ca-certificates >/dev/null"
        --customize-hook="rm -rf \"\$1\"/var/lib/apt/lists/* \"\$1\"/var/cache/apt/*.bin"
    )
    mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
        --include="$PACKAGES" "${hooks[@]}" "$SUITE" "$out.part" "$sources"
    mv "$out.part" "$out"
    rm -rf "$work"
}

pack_stand_in() {
    local out=$1 src
    src=$(mktemp -d)
    mkdir "$src/fake_tei"
    cp tests/fake_tei/*.py "$src/fake_tei/"
    printf 'import runpy\nrunpy.run_module("fake_tei", run_name="__main__", alter_sys=True)\n' >"$src/__main__.py"
    python3 -m zipapp "$src" --python /usr/bin/python3 --output "$out"
    rm -rf "$src"
}

main() {
    need_tools
    mkdir -p "$CACHE"
    local hash rootfs stand_in_hash label
    hash=$(inputs_hash)
    rootfs=$CACHE/rootfs-$hash.tar
    if [[ -f $rootfs ]]; then
        log "cached rootfs $rootfs"
    else
        find "$CACHE" -maxdepth 1 -name 'rootfs-*.tar*' -delete
        build_rootfs "$rootfs"
    fi
    stand_in_hash=$(cat tests/fake_tei/*.py tests/image/lookalike/Containerfile | sha256sum | cut -c1-16)
    label="$hash-$stand_in_hash"
    if [[ $(podman image inspect --format '{{index .Labels "embed-launcher.lookalike"}}' "$TAG" 2>/dev/null) == "$label" ]]; then
        log "$TAG is up to date ($label)"
        return
    fi
    local old
    old=$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
    context=$(mktemp -d)
    trap 'rm -rf "$context"' EXIT
    ln "$rootfs" "$context/rootfs.tar" 2>/dev/null || cp "$rootfs" "$context/rootfs.tar"
    pack_stand_in "$context/text-embeddings-router"
    log "building $TAG"
    podman build --quiet --format docker --layers=false --network host --pull=never \
        --label "embed-launcher.lookalike=$label" \
        -f tests/image/lookalike/Containerfile -t "$TAG" "$context" >/dev/null
    # Only the image this script replaced; other users' dangling images are not ours to prune.
    if [[ -n $old ]]; then
        podman image rm "$old" >/dev/null 2>&1 || true
    fi
    log "built $TAG ($label)"
}

main
