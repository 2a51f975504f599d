#!/usr/bin/env python3
"""Runs nexus-ckks's bench and the peers in one invocation, interleaved per
thread count (ours T=1, peers T=1, ours T=2, peers T=2), stores every JSON
line under ops/bench/results/, and prints a markdown ratio table.

Usage: compare.py [--threads 1,2] [--repeats 7] [--ops ...] [--no-build]
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = os.path.join(HERE, ".venv", "bin", "python")
OPS = ["encode", "encrypt_pk", "decrypt", "add", "mul_plain", "mul_relin_rescale", "rescale", "rotate", "rotate_mid", "rotate_hoisted_8"]


def run_lines(cmd, env=None):
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--ops", default=",".join(OPS + ["ntt_forward_limb", "ntt_forward_limb_portable", "sizes"]))
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--skip-ours", action="store_true")
    args = p.parse_args()
    if not args.no_build and not args.skip_ours:
        subprocess.run(["cargo", "build", "--release", "-p", "nexus-ckks", "--example", "bench"], cwd=ROOT, check=True)
    bench = os.path.join(ROOT, "target", "release", "examples", "bench")
    rows = []
    peer_ops = ",".join(o for o in args.ops.split(",") if not o.startswith("ntt"))
    for t in [int(x) for x in args.threads.split(",")]:
        if not args.skip_ours:
            for r in run_lines([bench, "--preset", "bench-n16-l27", "--threads", str(t), "--repeats", str(args.repeats), "--ops", args.ops, "--json"]):
                r["peer"] = "nexus"
                rows.append(r)
        rows += run_lines([PY, os.path.join(HERE, "peers.py"), "--threads", str(t), "--repeats", str(args.repeats), "--ops", peer_ops])
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", time.strftime("%Y%m%d-%H%M%S") + ".jsonl")
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"raw results: {os.path.relpath(path, ROOT)}\n")

    def get(peer, op, t, key="median_ms"):
        for r in rows:
            if r.get("peer") == peer and r.get("op") == op and r.get("threads") == t:
                return r.get(key)
        return None

    fmt = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
    print("| op | threads | nexus ms | SEAL ms | DESILO ms | nexus / fastest peer | nexus bits | SEAL bits | DESILO bits |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in [int(x) for x in args.threads.split(",")]:
        for op in OPS:
            ours, seal, desilo = get("nexus", op, t), get("seal", op, t), get("desilo", op, t)
            peers = [v for v in (seal, desilo) if v is not None]
            ratio = f"{ours / min(peers):.2f}" if ours is not None and peers else "-"
            print(
                f"| {op} | {t} | {fmt(ours, 2)} | {fmt(seal, 2)} | {fmt(desilo, 2)} | {ratio} | "
                f"{fmt(get('nexus', op, t, 'precision_bits'))} | {fmt(get('seal', op, t, 'precision_bits'))} | {fmt(get('desilo', op, t, 'precision_bits'))} |"
            )
    for t in [int(x) for x in args.threads.split(",")]:
        ntt, portable, rot = get("nexus", "ntt_forward_limb", t), get("nexus", "ntt_forward_limb_portable", t), get("nexus", "rotate", t)
        hoist = get("nexus", "rotate_hoisted_8", t)
        if ntt and portable and rot:
            print(f"\nthreads {t}: NTT 2^16 limb IFMA {ntt:.3f} ms, portable {portable:.3f} ms ({portable / ntt:.1f}x); "
                  f"rotate = {rot / ntt:.0f} NTTs; 8 hoisted rotations = {hoist / rot:.2f} rotations")
    sizes = {r["peer"]: r for r in rows if r.get("op") == "sizes" and r.get("threads") == 1}
    for peer, r in sizes.items():
        extra = {k: v for k, v in r.items() if k.endswith("bytes")}
        print(f"sizes {peer}: {extra}")


if __name__ == "__main__":
    main()
