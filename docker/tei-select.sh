#!/bin/sh
# tei-select: start the text-embeddings-router that fits this image and this GPU.
#
# The launcher runs this as EMBED_TEI_BIN, with TEI's arguments. Our ENTRYPOINT replaces the TEI
# images' own entrypoint scripts, so this takes over their useful part:
#   * CPU images: nothing to decide, exec the router.
#   * CUDA images: make host NVIDIA tools/libraries mounted under /usr/local/nvidia visible, put
#     cuda-compat on the library path when the host driver is older than the image's CUDA runtime,
#     and in the multi-architecture `cuda-*` image (no plain text-embeddings-router, but one
#     text-embeddings-router-NN per compute capability) pick the build for the first visible GPU.
# It always ends in exec, so TEI keeps this PID and gets the launcher's signals directly.
# POSIX sh on purpose: the CPU images are debian slim, the CUDA images ubuntu.
set -eu

# Overridable only so the tests can point at a fake tree; the launcher passes a scrubbed env.
BIN_DIR=${TEI_SELECT_BIN_DIR:-/usr/local/bin}
CUDA_DIR=${TEI_SELECT_CUDA_DIR:-/usr/local/cuda}
HOST_NVIDIA_DIR=${TEI_SELECT_NVIDIA_DIR:-/usr/local/nvidia}

die() {
    echo "tei-select: $*" >&2
    exit 1
}

# "12.9.1" -> 120901; anything that is not a dotted number -> 0.
version_number() {
    case $1 in '' | *[!0-9.]*) echo 0; return ;; esac
    old_ifs=$IFS
    IFS=.
    # shellcheck disable=SC2086 # split on the dots on purpose
    set -- $1 0 0
    IFS=$old_ifs
    echo $((${1:-0} * 10000 + ${2:-0} * 100 + ${3:-0}))
}

# Runtimes such as GKE mount the driver's tools and libraries here without adding them to the
# search paths. Appended, so the image's own libraries still come first.
add_host_nvidia_paths() {
    if [ -d "$HOST_NVIDIA_DIR/bin" ]; then
        PATH="$PATH:$HOST_NVIDIA_DIR/bin"
        export PATH
    fi
    if [ -d "$HOST_NVIDIA_DIR/lib64" ]; then
        LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$HOST_NVIDIA_DIR/lib64"
        export LD_LIBRARY_PATH
    fi
}

# cuda-compat lets an older driver run the image's newer CUDA runtime (CUDA_VERSION comes from the
# nvidia/cuda base image), but it breaks a driver that is already newer, so add it only when needed.
use_cuda_compat_if_driver_is_older() {
    [ -d "$CUDA_DIR/compat" ] && [ -n "${CUDA_VERSION:-}" ] || return 0
    driver_cuda=$(nvidia-smi 2>/dev/null \
        | sed -n 's/.*CUDA[A-Za-z ]*Version:[[:space:]]*\([0-9][0-9.]*\).*/\1/p' | head -n 1) || true
    [ -n "$driver_cuda" ] || return 0
    if [ "$(version_number "$driver_cuda")" -lt "$(version_number "$CUDA_VERSION")" ]; then
        LD_LIBRARY_PATH="$CUDA_DIR/compat${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export LD_LIBRARY_PATH
    fi
}

# "8.6" -> 86, for the first GPU nvidia-smi lists (the one TEI uses by default).
compute_capability() {
    nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .\r' || true
}

# The newest text-embeddings-router-NN with the GPU's major version and NN <= its capability:
# CUDA code built for X.y runs on X.z when z >= y (so -80 serves 8.6 and 8.9, -120 serves 12.1).
pick_router() {
    cap=$1
    best=
    for path in "$BIN_DIR"/text-embeddings-router-*; do
        nn=${path##*-}
        case $nn in '' | *[!0-9]*) continue ;; esac
        [ -x "$path" ] || continue
        [ $((nn / 10)) -eq $((cap / 10)) ] && [ "$nn" -le "$cap" ] || continue
        if [ -z "$best" ] || [ "$nn" -gt "${best##*-}" ]; then
            best=$path
        fi
    done
    echo "$best"
}

available_builds() {
    found=
    for path in "$BIN_DIR"/text-embeddings-router-*; do
        [ -x "$path" ] && found="$found ${path##*-}"
    done
    echo "${found# }"
}

router=$BIN_DIR/text-embeddings-router

if [ ! -d "$CUDA_DIR" ]; then
    [ -x "$router" ] || die "$router not found; build the image FROM a TEI image (TEI_TAG=cpu-1.9.3)."
    exec "$router" "$@"
fi

add_host_nvidia_paths
command -v nvidia-smi >/dev/null 2>&1 \
    || die "nvidia-smi not found: this CUDA image needs a GPU. Run it with --gpus all (compose: docker-compose.gpu.yml and the NVIDIA Container Toolkit), or build with TEI_TAG=cpu-1.9.3."
use_cuda_compat_if_driver_is_older

if [ ! -x "$router" ]; then
    cap=$(compute_capability)
    case $cap in '' | *[!0-9]*) die "could not read the GPU's compute capability from nvidia-smi (got '$cap')." ;; esac
    router=$(pick_router "$cap")
    [ -n "$router" ] \
        || die "this image has no TEI build for compute capability $cap (it has: $(available_builds)); rebuild with the TEI_TAG for your GPU (see docker/Dockerfile)."
fi
exec "$router" "$@"
