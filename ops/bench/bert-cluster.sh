#!/usr/bin/env bash
# Encrypted all-MiniLM-L6-v2 through the real binaries at 128-bit
# N16_QP1545_H192: a coordinator with a data directory (key sets in its key
# store, not its raft log), one worker with the model root, the tenant's CLI
# (keygen, keys upload, submit --text, status --watch, fetch). Two queries
# of the same sentence: the first one cold (the worker fetches the key set,
# loads the model, builds the bootstrapping circuit), the second warm.
# Reports each query's wall time as the client sees it (submit to result),
# the worker's busy time for it (wall time with at least one of its tasks
# running; a layer's side-by-side tasks count once), their ratio (the
# distribution overhead), the sum of its task times, peak memory per
# process and the cosine of the decrypted embedding with the plaintext
# model's.
#
#   ops/bench/bert-cluster.sh [LAYERS]        (default 1; MiniLM has 6)
#   NEXUS_WORKER_FLAGS=--lean-keys ops/bench/bert-cluster.sh 1   (worker flags)
#   NEXUS_LABELS="animals;food;science" ops/bench/bert-cluster.sh 1
#       (a zero-shot head: its logits, Argmax rounds and mask run as tasks
#       after the pooling; each query reports the class too)
#   NEXUS_HEAD=NAME ops/bench/bert-cluster.sh 1
#       (a trained head instead: heads/NAME.safetensors in the model
#       directory)
#   SENTENCES=4 ops/bench/bert-cluster.sh 1
#       (throughput mode: keys for 4 sentences per query, each query packs
#       the first 4 lines of TEXT_FILE, default ops/models/accuracy-sentences.txt;
#       reports the wall time per sentence and the lowest cosine)
#
# It also writes the warm query's per-task costs (COSTS_OUT, default
# ops/bench/results/bert-costs-LAYERS-layers.json) for
# `nexus sim --costs FILE --no-validate`.
#
# Needs the model (ops/models/fetch-minilm.sh) and about 20 GB of memory.
# A quick run of the whole path with the tests' tiny BERT at an insecure
# preset (a minute, not a figure):
#   cargo run --release -q -p nexus-tests --example tiny_bert -- /tmp/models/tiny-bert
#   NEXUS_MINILM_DIR=/tmp/models/tiny-bert PRESET=INSECURE_N12_QP1521_H32_BOOT_DEEP_TEST \
#   MAX_TOKENS=8 TEXT="A dog ran home fast" NEXUS_WORKER_FLAGS=--allow-insecure-parameters \
#   ops/bench/bert-cluster.sh 2
set -euo pipefail
cd "$(dirname "$0")/../.."
LAYERS=${1:-1}
MAX_TOKENS=${MAX_TOKENS:-16}
PRESET=${PRESET:-N16_QP1545_H192}
MODEL=${NEXUS_MINILM_DIR:-${NEXUS_MODEL_CACHE:-$HOME/.cache/nexus/models}/all-MiniLM-L6-v2}
TEXT=${TEXT:-"Homomorphic encryption lets a server compute on data it cannot read."}
SENTENCES=${SENTENCES:-1}
texts=("$TEXT")
if [ "$SENTENCES" -gt 1 ]; then
    mapfile -t texts < <(grep -v '^[[:space:]]*$' "${TEXT_FILE:-ops/models/accuracy-sentences.txt}" | head -n "$SENTENCES")
fi
text_args=()
for t in "${texts[@]}"; do text_args+=(--text "$t"); done
[ -f "$MODEL/model.safetensors" ] || { echo "no model at $MODEL (run ops/models/fetch-minilm.sh)" >&2; exit 1; }

cargo build --release -q -p nexus-coordinator -p nexus-worker -p nexus-client
cargo build --release -q -p nexus-tests --example plain_embedding
bin=target/release
work=$(mktemp -d /tmp/nexus-bert-cluster.XXXXXX)
source ops/bench/cluster-lib.sh
trap stop EXIT
cm=$(port); wm=$(port)
start_coordinator "$cm"
# Debug events in JSON: each finished task's kind, time and bytes (task-costs.py).
RUST_LOG=info,nexus_worker=debug /usr/bin/time -f %M -o "$work/worker.maxrss" $bin/nexus-worker \
    --coordinator "$addr" --certs "$work/certs" --name worker-0 --models "$(dirname "$MODEL")" \
    --metrics "127.0.0.1:$wm" --log-format json ${NEXUS_WORKER_FLAGS:-} 2>"$work/worker.log" &
pids+=($!)
export NEXUS_TOKEN=s3cret
conn=(--coordinator "$addr" --ca "$work/certs/ca.pem" --tenant acme)
client="$work/client"

t=$(now)
/usr/bin/time -f %M -o "$work/keygen.maxrss" $bin/nexus keygen --dir "$client" --preset $PRESET --model bert \
    --model-dir "$MODEL" --max-tokens $MAX_TOKENS --layers "$LAYERS" --sentences "$SENTENCES" \
    ${NEXUS_LABELS:+--labels "$NEXUS_LABELS"} ${NEXUS_HEAD:+--head "$NEXUS_HEAD"} >/dev/null
keygen_s=$(echo "$(now) - $t" | bc)
t=$(now)
$bin/nexus keys upload --dir "$client" "${conn[@]}" >/dev/null
upload_s=$(echo "$(now) - $t" | bc)
key_bytes=$(du -sb "$work/data/keys" | cut -f1)
raft_bytes=$(find "$work/data" -maxdepth 1 -type f -printf '%s\n' | awk '{s+=$1} END {print s}')

# Coordinator CPU seconds so far (user + system).
coordinator_cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$coordinator_pid/stat"
}
worker_task_seconds() {
    curl -s "http://127.0.0.1:$wm/metrics" | awk '/^nexus_worker_task_duration_seconds_sum/ {print $2}'
}
# Wall time with at least one task running: a layer's side-by-side tasks
# (its three projections, its two feed-forward tiles) count once.
worker_busy_seconds() {
    curl -s "http://127.0.0.1:$wm/metrics" | awk '/^nexus_worker_busy_seconds_total/ {print $2}'
}
plain=$(target/release/examples/plain_embedding "$MODEL" "$LAYERS" $MAX_TOKENS $PRESET "${texts[@]}")
results=()
for run in cold warm; do
    before=$(worker_task_seconds)
    busy_before=$(worker_busy_seconds)
    cpu_before=$(coordinator_cpu_seconds)
    t=$(now)
    q=$($bin/nexus submit --dir "$client" "${text_args[@]}" "${conn[@]}")
    $bin/nexus status "$q" --watch "${conn[@]}" >/dev/null
    got=$($bin/nexus fetch --dir "$client" "$q" --release "${conn[@]}")
    wall=$(echo "$(now) - $t" | bc)
    task=$(echo "$(worker_task_seconds) - $before" | bc)
    busy=$(echo "$(worker_busy_seconds) - $busy_before" | bc)
    coordinator_cpu=$(echo "$(coordinator_cpu_seconds) - $cpu_before" | bc)
    # Rows (the embedding) or, with a head, {"embedding", "class"}; for
    # several sentences a list of {"embedding"[, "class"]}. The lowest
    # cosine, and the classes.
    read -r cosine class < <(python3 -c '
import json, sys, math
got = json.loads(sys.argv[1])
if isinstance(got, dict):
    got = [got]
elif not isinstance(got[0], dict):
    got = [{"embedding": got[0]}]
plain = [json.loads(line) for line in sys.argv[2].splitlines()]
def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
worst = min(cos(g["embedding"], p) for g, p in zip(got, plain))
classes = [g["class"]["label"] for g in got if "class" in g]
print(worst, json.dumps(classes if classes else None).replace(" ", ""))' "$got" "$plain")
    results+=("{\"run\": \"$run\", \"sentences\": ${#texts[@]}, \"wall_s\": $wall, \"wall_per_sentence_s\": $(echo "scale=2; $wall / ${#texts[@]}" | bc), \"worker_busy_s\": $busy, \"worker_task_sum_s\": $task, \"coordinator_cpu_s\": $coordinator_cpu, \"ratio\": $(echo "scale=4; $wall / $busy" | bc), \"cosine\": $cosine, \"class\": $class}")
    echo "${results[-1]}"
done
stop
# The warm query's per-task costs, for `nexus sim --costs`.
costs=${COSTS_OUT:-ops/bench/results/bert-costs-$LAYERS-layers.json}
mkdir -p "$(dirname "$costs")"
python3 ops/bench/task-costs.py "$work/worker.log" --preset $PRESET --threads "$(nproc)" \
    --key-bytes "$key_bytes" --coordinator-cpu-s "$coordinator_cpu" >"$costs"
echo "{\"costs_file\": \"$costs\"}"
echo "{\"preset\": \"$PRESET\", \"layers\": $LAYERS, \"tokens_block\": $MAX_TOKENS, \"keygen_s\": $keygen_s, \"upload_s\": $upload_s, \"key_store_bytes\": $key_bytes, \"raft_state_bytes\": $raft_bytes, \"maxrss_kib\": {\"keygen\": $(cat "$work/keygen.maxrss"), \"coordinator\": $(cat "$work/coordinator.maxrss" | tail -1), \"worker\": $(cat "$work/worker.maxrss" | tail -1)}, \"queries\": [$(IFS=,; echo "${results[*]}")]}"
rm -rf "$work"
