#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for a bounded time from the
# committed corpus (fuzz/corpus/TARGET, seeds written by
# `cargo run --release -p nexus-tests --example fuzz_seeds -- fuzz/corpus`).
# New inputs the fuzzer finds go to a scratch directory, so the committed
# corpus only changes on purpose. A crash fails the run; libFuzzer leaves
# the input under fuzz/artifacts/TARGET/: turn it into a regression test.
#
#   ops/fuzz.sh                 # every target, NEXUS_FUZZ_SECONDS (20) each
#   ops/fuzz.sh frame keys      # some targets
#
# Stable Rust: coverage instrumentation without a sanitizer (`-s none`);
# debug assertions and overflow checks are on in the fuzz profile.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${NEXUS_FUZZ_SECONDS:-20}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
echo "== building fuzz targets: ${targets[*]}"
cargo fuzz build --fuzz-dir fuzz -s none -O

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    echo "== fuzzing $t for ${seconds}s"
    # -seed fixes the mutation sequence; -rss_limit_mb catches decoders
    # that allocate from a length field they did not check.
    status=0
    cargo fuzz run --fuzz-dir fuzz -s none -O "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -seed=1 -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
        >"$scratch/$t.log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY)|panicked|Done [0-9]+ runs' \
        "$scratch/$t.log" || true
    if [ "$status" != 0 ]; then
        tail -n 40 "$scratch/$t.log" >&2
    fi
    if [ "$status" != 0 ]; then
        echo "fuzz target $t failed (exit $status); reproducer under fuzz/artifacts/$t/" >&2
        exit "$status"
    fi
done
echo "== fuzzing: ${#targets[@]} targets clean"
