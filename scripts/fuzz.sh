#!/usr/bin/env bash
# Fuzzes blobswarm's decoders (wire requests and responses, signed releases, chunk maps)
# with cargo-fuzz / libFuzzer on the stable toolchain. See fuzz/README.md.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; TARGET defaults to every target. Targets run one
# after another, each as one single-threaded libFuzzer process, so the machine keeps a
# core for other work. Prints the executions per target and exits non-zero on any crash,
# panic, timeout, leak or allocation over the limit (the reproducer is left under
# fuzz/artifacts/TARGET/ and its path printed).
#
# Environment:
#   FUZZ_SANITIZER   address (default; enables the per-allocation limit) or none (~6x faster)
#   FUZZ_MAX_LEN     largest input in bytes (default 65536: the request-header limit)
#   FUZZ_MALLOC_MB   fail on any single allocation of this many MiB or more (default 10,
#                    just above the codec's 9 MiB decode limit; only enforced with the
#                    address sanitizer; the harnesses' own bound is tighter, see fuzz/README.md)
#   FUZZ_TOOLS_DIR   where cargo-fuzz is installed if it is missing
#                    (default ~/.cache/blobswarm/tools)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

secs=${1:-60}
shift || true
all_targets=(wire_request wire_response signed_release chunk_map swarm_notice progress_report node_haves)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi
sanitizer=${FUZZ_SANITIZER:-address}
max_len=${FUZZ_MAX_LEN:-65536}
malloc_mb=${FUZZ_MALLOC_MB:-10}

# cargo-fuzz, pinned; installed once into a cache directory when missing.
cargo_fuzz_version=0.13.2
tools=${FUZZ_TOOLS_DIR:-$HOME/.cache/blobswarm/tools}
if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $cargo_fuzz_version" ]; then
    if [ "$("$tools/bin/cargo-fuzz" --version 2>/dev/null || true)" != "cargo-fuzz $cargo_fuzz_version" ]; then
        echo "fuzz: installing cargo-fuzz $cargo_fuzz_version into $tools"
        cargo install --locked --root "$tools" cargo-fuzz --version "$cargo_fuzz_version"
    fi
    export PATH="$tools/bin:$PATH"
fi

# cargo-fuzz passes -Z flags (sanitizer, coverage options) that only nightly accepts;
# RUSTC_BOOTSTRAP=1 lets the stable compiler take them. The stable toolchain ships the
# sanitizer runtimes (librustc-stable_rt.asan.a).
export RUSTC_BOOTSTRAP=1
cd fuzz
target_dir=target/fuzz-$sanitizer
bin_dir=$target_dir/x86_64-unknown-linux-gnu/release

# Seed corpora from valid encodings; the generator also checks the harnesses accept them.
cargo run --quiet --example seeds -- corpus/seeds
# Debug assertions and overflow checks come from [profile.release] in fuzz/Cargo.toml.
cargo fuzz build -s "$sanitizer" --target-dir "$target_dir"
for t in "${targets[@]}"; do
    [ -x "$bin_dir/$t" ] || { echo "fuzz: target $t was not built ($bin_dir/$t)" >&2; exit 1; }
done

mkdir -p logs
flags=(-max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=1024
    -print_final_stats=1)
[ "$sanitizer" = address ] && flags+=(-malloc_limit_mb="$malloc_mb")
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log=logs/$t.log
    echo "fuzz: $t for ${secs}s ($sanitizer sanitizer)"
    rc=0
    "$bin_dir/$t" "corpus/$t" "corpus/seeds/$t" "${flags[@]}" \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    units=$(find "corpus/$t" -type f | wc -l)
    summary+=("$(printf '%-16s %10s s %14s execs %10s execs/s %8s corpus' \
        "$t" "$secs" "${execs:-?}" "${rate:-?}" "$units")")
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        echo "fuzz: $t FAILED (exit $rc); last lines of fuzz/$log:" >&2
        grep -v '^#[0-9]' "$log" | tail -40 >&2
        grep -o 'Test unit written to .*' "$log" | sed "s|to |to fuzz/|" >&2 || true
    fi
done

echo
echo "fuzz summary ($(date -u +%FT%TZ), sanitizer $sanitizer, max_len $max_len):"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: no crash in ${#targets[@]} targets"
