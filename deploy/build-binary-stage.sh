#!/usr/bin/env bash
# The builder stage of deploy/Dockerfile, which runs this script and nothing else, so a
# machine without a Docker daemon can run exactly the same build.
#
#   deploy/build-binary-stage.sh             deps, then build into deploy/out
#   deploy/build-binary-stage.sh deps        install build dependencies (protoc) if missing
#   deploy/build-binary-stage.sh build [OUT] build blobswarm with containerd support and
#                                            install it as OUT/blobswarm (default deploy/out)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

deps() {
    # containerd-client generates its gRPC code with protoc at build time.
    if command -v protoc >/dev/null 2>&1; then
        echo "build: protoc found ($(protoc --version))"
        return
    fi
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    ${sudo[@]+"${sudo[@]}"} apt-get update -q
    ${sudo[@]+"${sudo[@]}"} apt-get install -y -q --no-install-recommends protobuf-compiler
}

build() {
    local out=${1:-deploy/out}
    cargo build --release --locked --features containerd --bin blobswarm
    install -D -m 0755 "${CARGO_TARGET_DIR:-target}/release/blobswarm" "$out/blobswarm"
    "$out/blobswarm" --version
}

case "${1:-all}" in
    deps) deps ;;
    build) build "${2:-}" ;;
    all) deps && build ;;
    *)
        echo "usage: $0 [deps | build [OUT_DIR]]" >&2
        exit 2
        ;;
esac
