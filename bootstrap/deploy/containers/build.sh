#!/bin/sh
# Build token.place's container images with buildah, from Debian's packages and wheels built here.
#
#   bootstrap/deploy/containers/build.sh relay      localhost/tp-relay:VERSION
#   bootstrap/deploy/containers/build.sh node-cpu   localhost/tp-node-cpu:VERSION (llama.cpp on the CPU)
#   bootstrap/deploy/containers/build.sh node       localhost/tp-node:VERSION (CUDA; needs PyPI and the CUDA base)
#   bootstrap/deploy/containers/build.sh base       only the Debian base below
#
# VERSION is pyproject.toml's. The relay and CPU node images start FROM $DEBIAN_IMAGE (default
# localhost/tp-debian:bookworm); when it is missing it is made here: `debootstrap --variant=minbase bookworm`
# (root, the Debian mirror $DEBIAN_MIRROR) committed with `buildah from scratch`, so no registry is needed.
# DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim uses the registry's instead. Wheels: `pip wheel` of
# this checkout with $PYTHON (default python3; pip honours PIP_FIND_LINKS, PIP_INDEX_URL). The image installs
# from them with --no-index, except the CUDA node, whose llama-cpp-python is compiled with
# CMAKE_ARGS=-DGGML_CUDA=on inside the CUDA devel image. BUILDAH_ISOLATION defaults to chroot (works
# inside unprivileged containers too).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/pyproject.toml")
PYTHON=${PYTHON:-python3}
DEBIAN_IMAGE=${DEBIAN_IMAGE:-localhost/tp-debian:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"

base() {
    if buildah inspect --type image "$DEBIAN_IMAGE" >/dev/null 2>&1; then
        return
    fi
    case "$DEBIAN_IMAGE" in
        localhost/*) ;;
        *) buildah pull "$DEBIAN_IMAGE" && return ;;
    esac
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
        "$DEBIAN_MIRROR"
    container=$(buildah from scratch)
    mount=$(buildah mount "$container")
    cp -a "$rootfs/." "$mount/"
    buildah umount "$container" >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd /bin/bash "$container"
    buildah commit --quiet --rm "$container" "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$rootfs"
}

# wheels CONTEXT REQUIREMENT [PIP_WHEEL_FLAGS...]: the build context, holding only wheels/.
wheels() {
    context=$1
    requirement=$2
    shift 2
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$context/wheels" "$@" \
        "$requirement"
}

build() {
    image=$1
    containerfile=$2
    context=$3
    shift 3
    previous=$(buildah images --quiet "$image" 2>/dev/null || true)
    buildah bud --quiet --format docker --layers=false -f "$here/$containerfile" -t "$image" "$@" "$context"
    # The image this one replaces, now untagged (kept while a container still uses it).
    if [ -n "$previous" ] && [ "$previous" != "$(buildah images --quiet "$image")" ]; then
        buildah rmi "$previous" >/dev/null 2>&1 || true
    fi
    echo "built $image"
}

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
case "${1:-}" in
    base)
        base
        ;;
    relay)
        base
        wheels "$context" "$root"
        build "localhost/tp-relay:$version" relay.Containerfile "$context" \
            --build-arg BASE_IMAGE="$DEBIAN_IMAGE"
        ;;
    node-cpu)
        base
        wheels "$context" "$root[node]"
        build "localhost/tp-node-cpu:$version" node.Containerfile "$context" \
            --build-arg BUILD_IMAGE="$DEBIAN_IMAGE" --build-arg BASE_IMAGE="$DEBIAN_IMAGE" \
            --build-arg CMAKE_ARGS="-DGGML_NATIVE=off"
        ;;
    node)
        # Only the project's own wheel: llama-cpp-python and the rest come from the index, for CUDA's python.
        wheels "$context" "$root" --no-deps
        build "localhost/tp-node:$version" node.Containerfile "$context" --build-arg PIP_FLAGS=
        ;;
    *)
        echo "usage: $0 relay|node-cpu|node|base" >&2
        exit 2
        ;;
esac
