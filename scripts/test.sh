#!/usr/bin/env bash
# The full check CI runs: test dependencies, formatting, lints, then every test.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p blobswarm-seeder`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
# --all-features: builds and tests the containerd importer (needs protoc, installed above).
# Release: the end-to-end tests move tens of MiB and hash them; debug is too slow.
cargo test --workspace --release --all-features "$@"
bash scripts/validate-manifests.sh # deploy/: render, schema-validate, flags vs. the binary built above
# The Dockerfile's builder stage, run as the script the Dockerfile runs (no Docker daemon
# here, see deploy/README.md): must build and print the version.
stage_out=$(mktemp -d)
bash deploy/build-binary-stage.sh build "$stage_out"
rm -rf "$stage_out"
bash scripts/fuzz.sh 20 # fuzz/: every fuzz target for 20 s (cargo-fuzz on stable); fails on any crash
# The swarm benchmark's smoke run (issue 6): fails if the harness breaks or blobswarm's
# registry egress is not about 1x the image. About 30 s after the build above.
bash scripts/bench-smoke.sh
