#!/usr/bin/env python3
"""Per-task costs of one query, read from a worker's JSON log, as the costs
object `nexus sim --costs FILE` projects from.

The worker logs every finished task at debug level ("task done": kind,
milliseconds, input and output bytes); run it with `--log-format json` and
`RUST_LOG=nexus_worker=debug` (ops/bench/bert-cluster.sh does). The query
measured is the last one in the log unless --query names another. It must
have one input ciphertext (BERT-family queries do): its tasks, in index
order, are the tasks of its model's plan on that input. Workers log the
model each task belongs to; the costs then name it, and `nexus sim` runs
each task once the tasks it reads (by the coordinator's plan of that model)
have finished. Without a model (an older worker's log, and no --model) the
tasks run as a chain.

  ops/bench/task-costs.py WORKER_LOG --preset P --threads T --key-bytes B \
      [--coordinator-cpu-s S] [--query ID] [--model ID] > costs.json
"""
import argparse
import json
import sys

import jsonl


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", help="the worker's stderr with --log-format json")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--threads", type=int, required=True, help="the worker's engine threads")
    ap.add_argument("--key-bytes", type=int, required=True, help="bytes of the key set on the wire")
    ap.add_argument(
        "--coordinator-cpu-s",
        type=float,
        help="coordinator CPU seconds spent on the query (divided by its tasks)",
    )
    ap.add_argument("--query", help="the query id (default: the last one logged)")
    ap.add_argument("--model", help="the model id the query ran (default: the one the worker logged)")
    args = ap.parse_args()

    tasks = {}
    order = []
    for n, event in jsonl.objects(args.log, strict=False):
        if event.get("message") != "task done":
            continue
        missing = [k for k in ("query", "task", "kind", "ms", "input_bytes", "output_bytes") if k not in event]
        if missing:
            print(f"{args.log}:{n}: 'task done' without {missing}: an older worker?", file=sys.stderr)
            return 1
        q = event["query"]
        if q not in tasks:
            tasks[q] = {}
            order.append(q)
        tasks[q][int(event["task"])] = event
    if not order:
        print(f"{args.log}: no 'task done' events (needs RUST_LOG=nexus_worker=debug and --log-format json)", file=sys.stderr)
        return 1
    query = args.query or order[-1]
    if query not in tasks:
        print(f"{args.log}: no tasks of query {query} (queries: {', '.join(order)})", file=sys.stderr)
        return 1
    chain = [tasks[query][i] for i in sorted(tasks[query])]
    kinds = [t["kind"] for t in chain]
    if len(set(kinds)) != len(kinds):
        # Several input ciphertexts: their chains interleave in the indices.
        print(f"query {query}: task kinds repeat ({kinds}); only one-input queries are read", file=sys.stderr)
        return 1
    costs = {
        "preset": args.preset,
        "threads": args.threads,
        # The key-set fetch of a cold query is not compute: the simulator
        # charges it to the link.
        "task_seconds": [(t["ms"] - t.get("keys_ms", 0)) / 1e3 for t in chain],
        "inputs_per_query": 1,
        "ciphertext_bytes": [t["input_bytes"] for t in chain] + [chain[-1]["output_bytes"]],
        "key_bytes": args.key_bytes,
        "task_kinds": [t["kind"] for t in chain],
    }
    models = {t["model"] for t in chain if "model" in t}
    if len(models) > 1:
        print(f"query {query}: tasks of several models {sorted(models)}", file=sys.stderr)
        return 1
    model = args.model or (models.pop() if models else None)
    if model is not None:
        costs["model"] = model
        costs["output_bytes"] = [t["output_bytes"] for t in chain]
    if args.coordinator_cpu_s is not None:
        costs["coordinator_s_per_task"] = args.coordinator_cpu_s / len(chain)
    print(json.dumps(costs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
