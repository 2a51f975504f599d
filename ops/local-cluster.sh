#!/usr/bin/env bash
# A local Nexus cluster as processes on loopback: 3 coordinators (a raft
# group, logs under $DIR), N workers (default 2) and Prometheus scraping
# them with ops/prometheus's rules. Ctrl-C stops everything.
#
#   ops/local-cluster.sh [WORKERS]          DIR=/tmp/nexus-local by default
#
# Clients connect to 127.0.0.1:7401-7403 (tenant "local", token in
# $DIR/token); metrics at 127.0.0.1:9101-9103 (coordinators) and 9201+
# (workers); Prometheus at http://127.0.0.1:9090.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${1:-2}
DIR=${DIR:-/tmp/nexus-local}
mkdir -p "$DIR"
cargo build --release -p nexus-coordinator -p nexus-worker
BIN=target/release
[ -f "$DIR/certs/ca.pem" ] || $BIN/nexus-coordinator init-certs --dir "$DIR/certs" --workers "$WORKERS"
[ -f "$DIR/token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/token"
TOKEN=$(cat "$DIR/token")

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
PEERS=()
for i in 1 2 3; do PEERS+=(--peer "$i=127.0.0.1:750$i=127.0.0.1:740$i"); done
for i in 1 2 3; do
    $BIN/nexus-coordinator run --id "$i" --listen "127.0.0.1:740$i" --raft-listen "127.0.0.1:750$i" \
        --metrics "127.0.0.1:910$i" --data-dir "$DIR/raft-$i" --certs "$DIR/certs" \
        --tenant "local=$TOKEN" "${PEERS[@]}" 2>>"$DIR/coordinator-$i.log" &
    pids+=($!)
done
targets=""
for ((w = 0; w < WORKERS; w++)); do
    port=$((9201 + w))
    $BIN/nexus-worker --coordinator 127.0.0.1:7401 --coordinator 127.0.0.1:7402 --coordinator 127.0.0.1:7403 \
        --certs "$DIR/certs" --name "worker-$w" --metrics "127.0.0.1:$port" 2>>"$DIR/worker-$w.log" &
    pids+=($!)
    targets="$targets\"127.0.0.1:$port\", "
done
if command -v prometheus >/dev/null 2>&1; then
    sed "s|targets: \[\"127.0.0.1:9201\", \"127.0.0.1:9202\"\]|targets: [${targets%, }]|; s|rules/nexus.rules.yml|$PWD/ops/prometheus/rules/nexus.rules.yml|" \
        ops/prometheus/prometheus.yml > "$DIR/prometheus.yml"
    prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/prometheus" \
        --web.listen-address=127.0.0.1:9090 2>>"$DIR/prometheus.log" &
    pids+=($!)
    echo "Prometheus: http://127.0.0.1:9090"
else
    echo "prometheus not installed (apt-get install prometheus): metrics endpoints only"
fi
echo "coordinators 127.0.0.1:7401-7403, tenant local, token in $DIR/token; logs in $DIR"
wait
