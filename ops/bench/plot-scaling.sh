#!/usr/bin/env bash
# Projects cluster scaling with `nexus sim` and renders docs/scaling.png.
#
#   ops/bench/plot-scaling.sh [SIM_OUTPUT.jsonl] [-- NEXUS_SIM_FLAGS...]
#
# PLOT_OUT names another PNG (e.g. docs/scaling-minilm.png for the output
# of `nexus sim --costs`).
#
# Without a file it runs `nexus sim --no-validate --coordinator-ms 16.5`
# (the coordinator CPU per task measured by the 1-worker validation run,
# docs/OPERATIONS.md) and keeps its output in ops/bench/results/. matplotlib
# goes into ops/bench/.venv (the peers' venv) if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=${1:-}
if [ -n "$src" ] && [ "$src" != "--" ]; then shift; else src=""; fi
[ "${1:-}" = "--" ] && shift
if [ ! -x ops/bench/.venv/bin/python ]; then
    python3 -m venv ops/bench/.venv
fi
ops/bench/.venv/bin/python -c "import matplotlib" 2>/dev/null \
    || ops/bench/.venv/bin/python -m pip install -q --disable-pip-version-check matplotlib
if [ -z "$src" ]; then
    mkdir -p ops/bench/results
    src=ops/bench/results/scaling-$(date +%Y%m%d-%H%M%S).jsonl
    cargo build --release -q -p nexus-client
    target/release/nexus sim --no-validate --coordinator-ms 16.5 "$@" | tee "$src"
fi
ops/bench/.venv/bin/python ops/bench/plot_scaling.py "$src" "${PLOT_OUT:-docs/scaling.png}"
