"""Renders `nexus sim`'s projection (its JSON lines) as a PNG: throughput
and scaling efficiency against the number of workers, with key sets cached
and with cold key caches, the 80% target, and the bottleneck the simulator
names where efficiency falls.

    python plot_scaling.py SIM_OUTPUT.jsonl OUT.png

Run by ops/bench/plot-scaling.sh, which produces the JSON lines first.
"""

import sys

import jsonl
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def workload(costs):
    """The title's workload: the measured chain of a --costs run, else the
    demo model that `nexus sim` calibrates."""
    kinds = (costs or {}).get("task_kinds") or []
    if not kinds:
        return "mlp-demo batch"
    seconds = sum(costs.get("task_seconds", []))
    # A model's plan has many steps: name the model and count its tasks.
    what = costs.get("model") or " + ".join(kinds)
    if costs.get("model"):
        what += f", {len(kinds)} tasks"
    return f"{costs.get('preset', '?')}, {what} ({seconds:.0f} s per query, measured)"


def projections(path):
    rows = {True: [], False: []}
    costs = None
    for _, obj in jsonl.objects(path):
        if "costs" in obj:
            costs = obj["costs"]
        if "projection" not in obj:
            continue
        p = obj["projection"]
        rows[bool(obj["warm_key_caches"])].append(
            (p["workers"], p["throughput_qps"], 100.0 * obj["efficiency"], p["bottleneck"])
        )
    if not rows[True]:
        sys.exit(f"{path}: no projection lines (expected the output of `nexus sim`)")
    return {warm: sorted(r) for warm, r in rows.items() if r}, workload(costs)


def main(src, out):
    rows, name = projections(src)
    fig, (thr, eff) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {True: ("-o", "key sets cached"), False: ("--s", "cold key caches")}
    for warm, r in rows.items():
        style, label = styles[warm]
        workers = [x[0] for x in r]
        thr.plot(workers, [x[1] for x in r], style, label=label)
        eff.plot(workers, [x[2] for x in r], style, label=label)
    warm = rows[True]
    base = warm[0][1] / warm[0][0]
    thr.plot([x[0] for x in warm], [base * x[0] for x in warm], ":", color="grey", label="linear")
    eff.axhline(80, color="grey", ls=":", label="target 80%")
    # Name the bottleneck wherever it changes along the cached curve.
    previous = None
    for w, _, e, bottleneck in warm:
        if bottleneck != previous:
            eff.annotate(bottleneck, (w, e), textcoords="offset points", xytext=(4, 6), fontsize=8)
            previous = bottleneck
    for ax in (thr, eff):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("workers")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    thr.set_yscale("log", base=2)
    thr.set_ylabel("queries / s")
    thr.set_title("Projected throughput")
    eff.set_ylabel("efficiency (%)")
    eff.set_ylim(0, 105)
    eff.set_title("Scaling efficiency (bottleneck named)")
    fig.suptitle(f"nexus sim: {name}, 8 queries per worker", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_scaling.py SIM_OUTPUT.jsonl OUT.png")
    main(sys.argv[1], sys.argv[2])
