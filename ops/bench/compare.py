#!/usr/bin/env python3
"""nexus-ckks against its peers (SEAL, DESILO) in one invocation.

For each thread count, interleaved (ours T=1, peers T=1, ours T=2, peers T=2):
  cargo run --release -p nexus-ckks --example bench -- --preset bench-n16-l27 --threads T --json
  ops/bench/.venv/bin/python ops/bench/peers.py --threads T
All JSON lines go to ops/bench/results/<timestamp>.jsonl, then a markdown
table of medians and ratios is printed. A missing peer or op shows as '-'.

Usage: compare.py [--threads 1,2] [--repeats R] [--ops a,b] [--no-build]
                  [--skip-ours | --ours-json FILE] [--peers-json FILE]
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV_PY = os.path.join(HERE, ".venv", "bin", "python")
PEERS = ["seal", "desilo"]
TABLE_OPS = [
    "ntt_forward_limb",
    "encode",
    "encrypt_pk",
    "decrypt",
    "add",
    "mul_plain",
    "mul_relin_rescale",
    "rescale",
    "rotate",
    "rotate_mid",
    "rotate_hoisted_8",
    "serialize",
    "deserialize",
]
# nexus's "sizes" row -> the peers' size ops.
NEXUS_SIZE_FIELDS = {"size_ciphertext_bytes": "ciphertext_bytes", "size_galois_key_bytes": "galois_key_seeded_bytes"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def json_lines(text):
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log(f"compare: skipped a malformed line: {line[:120]}")
    return rows


def run_json(cmd, what):
    """Runs cmd from the repo root (stderr passes through) and returns its JSON
    lines; a failure is reported and yields whatever it printed."""
    log("$ " + " ".join(cmd))
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    except OSError as e:
        log(f"compare: {what} did not start: {e}")
        return []
    if r.returncode:
        log(f"compare: {what} exited with {r.returncode}")
    rows = json_lines(r.stdout)
    log(f"  {what}: {len(rows)} rows in {time.perf_counter() - t:.0f} s")
    return rows


def ours_cmd(args, t, built):
    tail = ["--preset", "bench-n16-l27", "--threads", str(t), "--repeats", str(args.repeats), "--json"]
    if args.ops:
        ours = []
        for op in args.ops.split(","):
            op = "sizes" if op.startswith("size_") else op.strip()
            if op in TABLE_OPS + ["ntt_forward_limb_portable", "sizes"] and op not in ours:
                ours.append(op)
        tail += ["--ops", ",".join(ours)]
    binary = os.path.join(ROOT, "target", "release", "examples", "bench")
    if (args.no_build or built) and os.path.exists(binary):
        return [binary] + tail
    return ["cargo", "run", "--release", "-q", "-p", "nexus-ckks", "--example", "bench", "--"] + tail


def load_file(path, peer=None):
    with open(path) as f:
        rows = json_lines(f.read())
    if peer:
        for r in rows:
            r.setdefault("peer", peer)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per op, both sides (default 5)")
    p.add_argument("--ops", default=None, help="comma-separated op names passed to both sides (default: all)")
    p.add_argument("--no-build", action="store_true", help="run target/release/examples/bench as it is")
    p.add_argument("--skip-ours", action="store_true", help="peers only")
    p.add_argument("--ours-json", metavar="FILE", help="use nexus rows captured earlier instead of running the bench")
    p.add_argument("--peers-json", metavar="FILE", help="use peer rows captured earlier instead of running peers.py")
    args = p.parse_args()
    threads = [int(x) for x in args.threads.split(",") if x.strip()]
    run_ours = not (args.skip_ours or args.ours_json)
    py = VENV_PY if os.path.exists(VENV_PY) else sys.executable
    if not os.path.exists(VENV_PY) and not args.peers_json:
        log("compare: ops/bench/.venv is missing (run ops/bench/setup-peers.sh); peers will show as '-'")

    rows = []
    if args.ours_json:
        rows += [r for r in load_file(args.ours_json, "nexus") if r.get("peer") == "nexus"]
    if args.peers_json:
        rows += [r for r in load_file(args.peers_json) if r.get("peer") in PEERS]
    built = False
    if run_ours and not args.no_build:
        log("$ cargo build --release -p nexus-ckks --example bench")
        built = subprocess.run(["cargo", "build", "--release", "-p", "nexus-ckks", "--example", "bench"], cwd=ROOT).returncode == 0
        if not built:
            log("compare: build failed; nexus columns will show '-'")
    for t in threads:
        if run_ours and (built or args.no_build):
            for r in run_json(ours_cmd(args, t, built), f"nexus T={t}"):
                r["peer"] = "nexus"
                rows.append(r)
        if not args.peers_json:
            cmd = [py, os.path.join(HERE, "peers.py"), "--threads", str(t), "--repeats", str(args.repeats)]
            if args.ops:
                cmd += ["--ops", args.ops]
            rows += run_json(cmd, f"peers T={t}")

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", time.strftime("%Y%m%d-%H%M%S") + ".jsonl")
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"raw results: {os.path.relpath(path, ROOT)}\n")
    print(table(rows, threads))


def table(rows, threads):
    index = {}
    for r in rows:
        index[(r.get("peer"), r.get("op"), r.get("threads"))] = r

    def val(peer, op, t, key):
        r = index.get((peer, op, t))
        return None if r is None else r.get(key)

    def fmt(v, nd):
        if v is None:
            return "-"
        return f"{v:.{nd}f}" if isinstance(v, (int, float)) else str(v)

    def fmt_ms(v):
        if v is None:
            return "-"
        return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"

    out = [
        "| op | threads | nexus ms | seal ms | desilo ms | ratio nexus/fastest peer | nexus bits | best peer bits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in threads:
        for op in TABLE_OPS:
            ours = val("nexus", op, t, "median_ms")
            peer_ms = {pr: val(pr, op, t, "median_ms") for pr in PEERS}
            if ours is None and all(v is None for v in peer_ms.values()):
                continue
            fastest = min((v for v in peer_ms.values() if v), default=None)
            ratio = f"{ours / fastest:.2f}" if ours is not None and fastest else "-"
            peer_bits = [b for b in (val(pr, op, t, "precision_bits") for pr in PEERS) if b is not None]
            out.append(
                f"| {op} | {t} | {fmt_ms(ours)} | {fmt_ms(peer_ms['seal'])} | {fmt_ms(peer_ms['desilo'])} | {ratio} | "
                f"{fmt(val('nexus', op, t, 'precision_bits'), 2)} | {fmt(max(peer_bits) if peer_bits else None, 2)} |"
            )

    # Sizes (thread-independent): the first row found for each peer.
    def size(peer, op):
        for t in threads:
            if peer == "nexus":
                v = val("nexus", "sizes", t, NEXUS_SIZE_FIELDS[op])
            else:
                v = val(peer, op, t, "bytes")
            if v is not None:
                return v
        return None

    size_rows = [(op, {pr: size(pr, op) for pr in ["nexus"] + PEERS}) for op in NEXUS_SIZE_FIELDS]
    if any(v is not None for _, d in size_rows for v in d.values()):
        mb = lambda v: "-" if v is None else f"{int(v) / 1e6:.2f}"
        out += ["", "| size (MB) | nexus | seal | desilo |", "|---|---|---|---|"]
        out += [f"| {op.removeprefix('size_').removesuffix('_bytes')} | {mb(d['nexus'])} | {mb(d['seal'])} | {mb(d['desilo'])} |" for op, d in size_rows]
        out.append("(nexus: its serialized sizes, Galois key seeded; see each row's note for the peers)")

    # The peers' notes: what all rows of a peer say, what all rows at one
    # thread count add, then what each op adds.
    def common(lists):
        return [x for x in lists[0] if all(x in l for l in lists[1:])] if lists else []

    for peer in PEERS:
        mine = [r for r in rows if r.get("peer") == peer and r.get("note")]
        if not mine:
            continue
        split = lambda r: r["note"].split("; ")
        always = common([split(r) for r in mine])
        out += ["", f"{peer}: {'; '.join(always) or '-'}"]
        by_t = {}
        for t in threads:
            extra = [x for x in common([split(r) for r in mine if r.get("threads") == t]) if x not in always]
            by_t[t] = extra
            if extra and len(threads) > 1:
                out.append(f"- threads {t}: {'; '.join(extra)}")
        per_op = {}
        for r in mine:
            for part in split(r):
                if part not in always and part not in by_t.get(r.get("threads"), []) and part not in per_op.setdefault(r["op"], []):
                    per_op[r["op"]].append(part)
        out += [f"- {op}: {'; '.join(v)}" for op, v in per_op.items() if v]
    return "\n".join(out)


if __name__ == "__main__":
    main()
