#!/usr/bin/env bash
# nexus-ckks's 128-bit bootstrapping (N16_QP1545_H192, full slots) and
# OpenFHE's (its example parameters at N = 2^16, see openfhe_bootstrap.cpp)
# side by side in one run, at 2 and 1 threads, full and lean Galois keys for
# nexus; prints one JSON object per measurement and then the ratios.
#
#   OPENFHE_SRC=... ops/bench/setup-openfhe.sh     # once
#   ops/bench/bootstrap-vs-openfhe.sh [REPEATS]    # default 4
#
# Records go to ops/bench/results/bootstrap-vs-openfhe-<time>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
repeats="${1:-4}"
openfhe=ops/bench/.openfhe/openfhe_bootstrap
if [ ! -x "$openfhe" ]; then
    echo "bootstrap-vs-openfhe: $openfhe is missing: run ops/bench/setup-openfhe.sh first" >&2
    exit 2
fi
cargo build --release -q -p nexus-ckks --example bench
mkdir -p ops/bench/results
out="ops/bench/results/bootstrap-vs-openfhe-$(date -u +%Y%m%d-%H%M).jsonl"
for threads in 2 1; do
    target/release/examples/bench --op bootstrap --threads "$threads" --repeats "$repeats" --json --full-keys | tee -a "$out"
    target/release/examples/bench --op bootstrap --threads "$threads" --repeats "$repeats" --json | tee -a "$out"
    OMP_NUM_THREADS="$threads" "$openfhe" "$threads" "$repeats" | tee -a "$out"
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
for threads in (2, 1):
    peer = next((r for r in rows if r.get("peer") == "openfhe" and r["threads"] == threads), None)
    for r in rows:
        if r.get("peer") or r["threads"] != threads or peer is None:
            continue
        keys = "lean" if r.get("lean_keys") else "full"
        print(f"{threads} thread(s), {keys} keys: nexus {r['median_ms'] / 1e3:.1f} s ({r['precision_bits_mean']:.2f} / {r['precision_bits_min']:.2f} bits, peak {r['peak_rss_mb'] / 1024:.2f} GiB) vs OpenFHE {peer['median_ms'] / 1e3:.1f} s ({peer['precision_bits_mean']:.2f} / {peer['precision_bits_min']:.2f} bits, peak {peer['peak_rss_mb'] / 1024:.2f} GiB): ratio {r['median_ms'] / peer['median_ms']:.2f}x")
PY
echo "records: $out"
