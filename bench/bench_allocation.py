"""Benchmark: allocation rules × sparsities × metrics on a real model (WikiText-2 test ppl).

    python bench/bench_allocation.py --model smollm2-135m --metrics wanda sparsegpt \\
        --rules uniform owl alpha sdsa --sparsities 0.6 0.7 0.8 --nsamples 16 --eval-windows 20 \\
        --out /tmp/alloc_smollm2.json --plot docs/allocation_smollm2-135m.png

The same code path as ``prunedsl prune --allocation RULE`` (``runtime.workbench.Workbench``:
``plan_allocation``, then ``prune_model`` with ``layer_sparsity=``), but the model is loaded
once and its dense weights restored between runs, and each rule's block statistics are computed once per metric: they
come from the dense model, so they do not depend on the sparsity. ``sparsegpt`` means the
``sparsegpt`` metric with ``--reconstruct`` (SparseGPT). Every finished run is appended to
``--out`` (JSON), and a rerun skips the runs already there. Prints Markdown tables: perplexity,
then the cost of each rule's statistics pass next to the pruning pass.

``--group`` is the comparison group of every metric's masks, passed to both
``plan_allocation`` and ``prune_model`` and recorded in the results' settings. Its default is
``row`` (each row prunes its share; with reconstruction, each row within each 128-column
block), which is what the committed results in docs/allocation.md used, for ``sparsegpt``
too; ``prunedsl prune --reconstruct`` now defaults to ``layer`` (SparseGPT's one threshold
over all rows of each 128-column block), so pass ``--group layer`` for that. A results file
made without a recorded group was made with ``row``; a rerun with another group into the same
file is refused (the runs would not compare).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS = {"wanda": ("wanda", False), "sparsegpt": ("sparsegpt", True)}  # name -> (metric, reconstruct)
GROUPS = ("row", "layer")  # global sets per-layer sparsity itself: not with an allocation


def results_group(results: dict) -> str:
    """The comparison group a results file was made with (files before it was recorded: row)."""
    return (results.get("settings") or {}).get("group", "row")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--metrics", nargs="+", default=["wanda", "sparsegpt"])
    ap.add_argument("--rules", nargs="+", default=["uniform", "owl", "alpha", "sdsa"])
    ap.add_argument("--sparsities", nargs="+", type=float, default=[0.6, 0.7, 0.8])
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--group", choices=GROUPS, default="row",
                    help="comparison group of every metric's masks (default row, as the committed "
                         "results; SparseGPT's own selection and prunedsl prune --reconstruct's "
                         "default is layer)")
    ap.add_argument("--out", default="/tmp/bench_allocation.json")
    ap.add_argument("--plot", default=None, help="PNG of per-block sparsity per rule (at --plot-sparsity)")
    ap.add_argument("--plot-sparsity", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (1 is faster on a busy machine: no spinning threads)")
    ap.add_argument("--table-only", action="store_true", help="print the tables of --out and exit")
    args = ap.parse_args()

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from prunedsl.api import parse, parse_allocation
    from prunedsl.runtime import data
    from prunedsl.runtime.models import load_model
    from prunedsl.runtime.workbench import Workbench

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"runs": [], "statistics": [], "dense": None}
    done = {(r["metric"], r["rule"], r["sparsity"]) for r in results["runs"]}
    if results["runs"] and not args.table_only and results_group(results) != args.group:
        sys.exit(f"{out} holds runs made with --group {results_group(results)}; "
                 f"use another --out for --group {args.group}")
    if args.table_only:
        print(tables(results, args))
        if args.plot:
            plot(results, args.plot, args.plot_sparsity)
        return
    loaded = load_model(args.model)
    tok = loaded.tokenizer
    calib = data.calibration_windows(data.tokenize(tok, data.load_text("validation")), args.nsamples,
                                     args.seqlen, args.seed)
    test_ids = data.tokenize(tok, data.load_text("test"))
    settings = {"model": args.model, "nsamples": args.nsamples, "seqlen": args.seqlen,
                "eval_windows": args.eval_windows, "seed": args.seed, "group": args.group,
                "torch": torch.__version__, "threads": torch.get_num_threads()}
    results["settings"] = settings

    def save() -> None:
        out.write_text(json.dumps(results, indent=1))

    bench = Workbench(loaded, calib, progress=False)  # keeps the dense weights

    def evaluate() -> dict:
        return bench.perplexity(test_ids, seqlen=args.seqlen, max_windows=args.eval_windows)

    if results.get("dense") is None:
        results["dense"] = evaluate()["ppl"]
        save()
    log(f"dense ppl {results['dense']:.3f}")
    cached: dict[tuple, dict] = {}  # (metric or None, statistic key) -> per-block values
    for mname in args.metrics:
        text, reconstruct = METRICS.get(mname, (mname, False))
        metric = parse(text)
        for rname in args.rules:
            rule = parse_allocation(rname)
            for s in args.sparsities:
                if (mname, rname, s) in done:
                    continue
                owner = mname if rule.needs_scores else None
                known = {k: cached[(owner, k)] for k in rule.requires if (owner, k) in cached}
                pruned = bench.prune(metric, sparsity=s, group=args.group, reconstruct=reconstruct,
                                     allocation=rule, block_stats=known)
                plan, report, prune_seconds = pruned.plan, pruned.report, pruned.seconds["prune"]
                if set(known) != set(rule.requires):  # this run computed the statistics: record the cost
                    cached.update({(owner, k): v for k, v in plan.block_stats.items()})
                    results["statistics"].append({"metric": mname, "rule": rname, "pass": plan.statistics_pass,
                                                  "seconds": plan.seconds})
                ev = evaluate()
                bench.restore()
                results["runs"].append({"metric": mname, "rule": rname, "rule_text": plan.rule, "sparsity": s,
                                        "realized": report.sparsity, "mean_sparsity": plan.mean_sparsity,
                                        "ppl": ev["ppl"], "prune_seconds": prune_seconds,
                                        "eval_seconds": ev["seconds"], "block_sparsity": plan.block_sparsity,
                                        "block_stats": plan.block_stats})
                save()
                log(f"{mname:>9} {rname:>8} {s:.2f}: ppl {ev['ppl']:.3f} (realized {report.sparsity:.6f}, "
                    f"prune {prune_seconds:.0f} s, eval {ev['seconds']:.0f} s)")
    print(tables(results, args))
    if args.plot:
        plot(results, args.plot, args.plot_sparsity)


def tables(results: dict, args) -> str:
    st = results["settings"]
    runs = {(r["metric"], r["rule"], r["sparsity"]): r for r in results["runs"]}
    metrics = [m for m in args.metrics if any(k[0] == m for k in runs)]
    cols = [(m, s) for m in metrics for s in args.sparsities]
    head = ["rule"] + [f"{m} {s:.0%}" for m, s in cols]
    rows = [[r] + [f"{runs[(m, r, s)]['ppl']:.2f}" if (m, r, s) in runs else "–" for m, s in cols]
            for r in args.rules]
    lines = [f"WikiText-2 test perplexity, {st['model']}: first {st['eval_windows']} windows of "
             f"{st['seqlen']} tokens; calibration {st['nsamples']}×{st['seqlen']} tokens of WikiText-2 "
             f"validation (seed {st['seed']}); dense ppl {results['dense']:.3f}. Lower is better; "
             "best per column in bold." + group_note(results), ""]
    for c in range(1, len(head)):
        vals = [float(r[c]) for r in rows if r[c] != "–"]
        for r in rows:
            if vals and r[c] != "–" and float(r[c]) == min(vals):
                r[c] = f"**{r[c]}**"
    lines += [md(head, rows), ""]
    cost = []
    for m in metrics:
        for r in args.rules:
            prune = [x["prune_seconds"] for x in results["runs"] if x["metric"] == m and x["rule"] == r]
            recs = [x for x in results["statistics"] if x["rule"] == r and x["metric"] in (m, None)]
            if not prune:
                continue
            if not recs:  # uniform, or weights-only statistics shared with an earlier metric
                kind = "none" if r == "uniform" else "shared"
                cost.append([m, r, kind, "0" if r == "uniform" else "–", "–", f"{mean(prune):.1f}"])
                continue
            passes = [sum(v for k, v in x["seconds"].items() if k != "mapping") for x in recs]
            maps = [x["seconds"].get("mapping", 0.0) * 1000 for x in recs]
            cost.append([m, r, recs[0]["pass"], f"{mean(passes):.1f}" + (f" (n={len(passes)})" if len(passes) > 1 else ""),
                         f"{mean(maps):.1f} ms", f"{mean(prune):.1f}"])
    lines += ["Cost per rule (seconds): the statistics pass runs once per model and metric; the "
              "pruning pass per sparsity (mean shown).", "",
              md(["metric", "rule", "statistics pass", "pass s", "mapping", "pruning pass s"], cost)]
    return "\n".join(lines)


def group_note(results: dict) -> str:
    """Says the comparison group when it is not the default row (so the committed tables,
    made with row, print as they did)."""
    group = results_group(results)
    return "" if group == "row" else f" Comparison group: {group} (every metric's masks)."


def mean(xs) -> float:
    return sum(xs) / max(1, len(xs))


def md(head, rows) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def plot(results: dict, path: str, sparsity: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    metrics = list(dict.fromkeys(r["metric"] for r in results["runs"]))  # in run order
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for r in results["runs"]:
            if r["metric"] == m and math.isclose(r["sparsity"], sparsity):
                ax.plot(range(len(r["block_sparsity"])), r["block_sparsity"], marker="o", ms=3,
                        label=f"{r['rule']} (ppl {r['ppl']:.1f})")
        ax.set_title(f"{results['settings']['model']}, {m} scores, mean {sparsity:.0%}")
        ax.set_xlabel("block")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("block sparsity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    log(f"wrote {path}")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
