#!/usr/bin/env bash
# Smoke run of the swarm benchmark (benches/swarm): 4 agents and 4 direct pulls of a
# 64 MiB image in network namespaces, plus a 256 MiB 2-peer loopback transfer. Fails if
# the harness breaks, if blobswarm's registry egress is not about 1x the image, or if the
# baseline's is not about 4x. Needs root (namespaces, veth, tc); scripts/test-deps.sh
# installs registry, skopeo and umoci. Extra arguments go to the harness.
# Takes about 30 s once built.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "bench-smoke: must run as root under CI (network namespaces and tc)" >&2
        exit 1
    fi
    echo "bench-smoke: SKIP, not root (the swarm benchmark needs network namespaces and tc)"
    exit 0
fi

# The plot's text is drawn with DejaVu Sans loaded from its file (no fontconfig).
font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
if [ ! -f "$font" ]; then
    echo "bench-smoke: installing fonts-dejavu-core for the plot's text"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends fonts-dejavu-core
fi

# --all-features: the same feature set as scripts/test.sh, so nothing is rebuilt.
cargo bench --all-features --bench swarm -- --smoke --out target/bench-swarm-smoke "$@"
