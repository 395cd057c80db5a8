#!/usr/bin/env bash
# Installs the Debian packages blobswarm's end-to-end tests need, if any is missing.
# Idempotent: when everything is present it changes nothing and touches no network.
#
#   docker-registry    CNCF distribution registry the seeder pulls from
#   skopeo, umoci      build and push real OCI images
#   busybox-static     the binary inside the test images
#   protobuf-compiler  protoc, for crates that generate code from .proto files
#   containerd, runc   the runtime the containerd importer is tested against
#   chromium           headless browser for the seeder dashboard test
#   prometheus         promtool, which checks deploy/observability's rules and dashboard
#   nodejs, npm        run the pinned CRD-schema validator of deploy/observability
#                      (scripts/validate-manifests.sh)
set -euo pipefail

# Commands may live in sbin directories that a non-root PATH lacks.
has_command() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

missing=()
# need PACKAGE COMMAND...: PACKAGE is missing unless every COMMAND is found.
need() {
    local pkg=$1
    shift
    local cmd
    for cmd in "$@"; do
        if ! has_command "$cmd"; then
            missing+=("$pkg")
            return
        fi
    done
}

check_all() {
    missing=()
    need docker-registry docker-registry
    need skopeo skopeo
    need umoci umoci
    # The tests need a busybox binary; the dynamic `busybox` package would do as well.
    need busybox-static busybox
    need protobuf-compiler protoc
    need containerd containerd ctr
    need runc runc
    need chromium chromium
    need prometheus promtool
    need nodejs node
    need npm npm
}

check_all
if [ ${#missing[@]} -eq 0 ]; then
    echo "test-deps: all test dependencies are installed"
    exit 0
fi

echo "test-deps: missing packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo)
else
    echo "test-deps: not root and no passwordless sudo; install them with:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: apt-get not found; install these packages by hand: ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
${sudo[@]+"${sudo[@]}"} apt-get update -q
${sudo[@]+"${sudo[@]}"} apt-get install -y -q --no-install-recommends "${missing[@]}"

check_all
if [ ${#missing[@]} -ne 0 ]; then
    echo "test-deps: still missing after install: ${missing[*]}" >&2
    exit 1
fi
echo "test-deps: installed"
