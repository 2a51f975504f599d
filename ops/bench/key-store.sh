#!/usr/bin/env bash
# A key set through a coordinator with a data directory, measured: the
# coordinator's peak memory (it streams key sets to and from its key store,
# one chunk in memory at a time, so this should stay far below the key
# set's size), the upload time, a second upload of the same key set (its
# bytes checked again, nothing written), and a worker's fetch of the key set
# for one query, whose result is checked against the plaintext.
#
#   ops/bench/key-store.sh                  (N16_QP1500_TERN, layernorm)
#   PRESET=N15_QP860_TERN MODEL=gelu ops/bench/key-store.sh
#   NEXUS_BIN=/path/to/bin ops/bench/key-store.sh   (other binaries, no build)
set -euo pipefail
cd "$(dirname "$0")/../.."
PRESET=${PRESET:-N16_QP1500_TERN}
MODEL=${MODEL:-layernorm}
if [ -z "${NEXUS_BIN:-}" ]; then
    cargo build --release -q -p nexus-coordinator -p nexus-worker -p nexus-client
fi
bin=${NEXUS_BIN:-target/release}
work=$(mktemp -d /tmp/nexus-key-store.XXXXXX)
source ops/bench/cluster-lib.sh
trap 'stop; rm -rf "$work"' EXIT
cm=$(port)
start_coordinator "$cm"
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$coordinator_pid/status"; }
export NEXUS_TOKEN=s3cret
conn=(--coordinator "$addr" --ca "$work/certs/ca.pem" --tenant acme)
client="$work/client"

$bin/nexus keygen --dir "$client" --preset "$PRESET" --model "$MODEL" >/dev/null
rss_before=$(rss_kib)
t=$(now)
$bin/nexus keys upload --dir "$client" "${conn[@]}" >/dev/null
upload_s=$(echo "$(now) - $t" | bc)
rss_after_upload=$(rss_kib)
t=$(now)
$bin/nexus keys upload --dir "$client" "${conn[@]}" >/dev/null
again_s=$(echo "$(now) - $t" | bc)
key_bytes=$(du -sb "$work/data/keys" | cut -f1)

$bin/nexus-worker --coordinator "$addr" --certs "$work/certs" --name worker-0 2>"$work/worker.log" &
pids+=($!)
# Rows of the model's width: 768 for layernorm, 128 for softmax, else 16.
width=$(case "$MODEL" in layernorm) echo 768 ;; softmax) echo 128 ;; *) echo 16 ;; esac)
python3 -c '
import json, random, sys
random.seed(7)
lo = -10.0 if sys.argv[2] == "softmax" else -2.0
hi = 0.0 if sys.argv[2] == "softmax" else 2.0
print(json.dumps([[random.uniform(lo, hi) for _ in range(int(sys.argv[1]))] for _ in range(4)]))' "$width" "$MODEL" >"$work/input.json"
t=$(now)
q=$($bin/nexus submit --dir "$client" --input "$work/input.json" "${conn[@]}")
$bin/nexus status "$q" --watch "${conn[@]}" >/dev/null
$bin/nexus fetch --dir "$client" "$q" --release "${conn[@]}" >"$work/result.json"
query_s=$(echo "$(now) - $t" | bc)
sent=$(curl -s "http://127.0.0.1:$cm/metrics" | awk '/^nexus_coordinator_key_sent_bytes_total/ {print $2}')
rows=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(len(r))' "$work/result.json")
stop
pids=()
echo "{\"preset\": \"$PRESET\", \"model\": \"$MODEL\", \"key_store_bytes\": $key_bytes, \"upload_s\": $upload_s, \"upload_again_s\": $again_s, \"query_s\": $query_s, \"result_rows\": $rows, \"key_bytes_sent_to_worker\": ${sent:-0}, \"coordinator_rss_kib\": {\"before_upload\": $rss_before, \"after_upload\": $rss_after_upload, \"peak\": $(tail -1 "$work/coordinator.maxrss")}}"
