"""Benchmark: allocation rules over several calibration seeds, per within-block order.

At 70% sparsity one calibration seed is not a measurement (a float summation order once
moved a cell 18%), so every cell here is the mean ± sd over seeds, and each rule is also
compared to uniform *paired by seed* (same calibration windows, same order), which
removes most of the seed-to-seed spread:

    python bench/bench_allocation_seeds.py --rules uniform owl --sparsities 0.7 \\
        --orders sequential parallel --seeds 0 1 2 3 4 --out docs/allocation_seeds_smollm2-135m.json

The protocol is docs/design.md §5: SmolLM2-135M, 32×512 calibration tokens of WikiText-2
validation (windows chosen by the seed), the first 40 windows of 512 tokens of WikiText-2
test. It is the same path as ``prunedsl prune --allocation RULE --within-block ORDER``
(``runtime.workbench.Workbench``); the model is loaded once, and each seed's block
statistics are computed once per metric (they come from the dense model). Every finished run
is appended to ``--out``; a rerun skips the runs already there. ``--table-only`` prints the
tables of ``--out``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--metric", default="wanda")
    ap.add_argument("--rules", nargs="+", default=["uniform", "owl"])
    ap.add_argument("--sparsities", nargs="+", type=float, default=[0.7])
    ap.add_argument("--orders", nargs="+", default=["sequential", "parallel"],
                    choices=["sequential", "parallel"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=40)
    ap.add_argument("--out", default="/tmp/bench_allocation_seeds.json")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (1 is faster on a busy machine: no threads waiting for each other)")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"runs": [], "dense": None}
    if args.table_only:
        print(tables(results))
        return

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from prunedsl.api import parse, parse_allocation
    from prunedsl.runtime import data
    from prunedsl.runtime.models import load_model
    from prunedsl.runtime.workbench import Workbench

    settings = {"model": args.model, "metric": args.metric, "nsamples": args.nsamples,
                "seqlen": args.seqlen, "eval_windows": args.eval_windows,
                "torch": torch.__version__, "threads": torch.get_num_threads()}
    if results.get("settings") and any(results["settings"][k] != v for k, v in settings.items()
                                       if k not in ("torch", "threads")):
        sys.exit(f"{out} was made with other settings ({results['settings']}); use another --out")
    results["settings"] = settings
    done = {(r["seed"], r["rule"], r["sparsity"], r["order"]) for r in results["runs"]}

    def save() -> None:
        out.write_text(json.dumps(results, indent=1))

    loaded = load_model(args.model)
    valid = data.tokenize(loaded.tokenizer, data.load_text("validation"))
    test_ids = data.tokenize(loaded.tokenizer, data.load_text("test"))
    metric = parse(args.metric)
    bench = Workbench(loaded, None, progress=False)

    def evaluate() -> dict:
        return bench.perplexity(test_ids, seqlen=args.seqlen, max_windows=args.eval_windows)

    if results.get("dense") is None:
        results["dense"] = evaluate()["ppl"]
        save()
    log(f"dense ppl {results['dense']:.3f} ({settings['threads']} threads)")
    for seed in args.seeds:
        calib = data.calibration_windows(valid, args.nsamples, args.seqlen, seed)
        known: dict[str, list[float]] = {}  # this seed's block statistics (dense model)
        for s in args.sparsities:
            for rname in args.rules:
                rule = parse_allocation(rname)
                for order in args.orders:
                    if (seed, rname, s, order) in done:
                        continue
                    t0 = time.perf_counter()
                    pruned = bench.prune(metric, sparsity=s, allocation=rule, calib=calib,
                                         block_stats={k: known[k] for k in rule.requires if k in known},
                                         within_block=order)
                    known.update(pruned.plan.block_stats)
                    ev = evaluate()
                    bench.restore()
                    results["runs"].append({"seed": seed, "rule": rname, "sparsity": s, "order": order,
                                            "ppl": ev["ppl"], "realized": pruned.report.sparsity,
                                            "block_sparsity": pruned.plan.block_sparsity,
                                            "seconds": time.perf_counter() - t0})
                    save()
                    log(f"seed {seed} {rname:>8} {s:.2f} {order:>10}: ppl {ev['ppl']:.3f} "
                        f"({time.perf_counter() - t0:.0f} s)")
    print(tables(results))


def tables(results: dict) -> str:
    st, runs = results["settings"], results["runs"]
    cell: dict[tuple, dict[int, float]] = {}
    for r in runs:
        cell.setdefault((r["rule"], r["sparsity"], r["order"]), {})[r["seed"]] = r["ppl"]
    known = ["uniform", "owl", "alpha", "sdsa"]  # uniform first: the others are compared to it
    rules = sorted({r["rule"] for r in runs}, key=lambda r: (known.index(r) if r in known else len(known), r))
    cols = sorted({(r["sparsity"], r["order"]) for r in runs}, key=lambda c: (c[0], c[1] != "sequential"))
    head = ["rule"] + [f"{s:.0%} {o}" for s, o in cols]
    lines = [f"WikiText-2 test perplexity, {st['model']}, metric {st['metric']}: mean ± sd over "
             f"calibration seeds (n per cell in brackets); {st['nsamples']}×{st['seqlen']} calibration "
             f"tokens of WikiText-2 validation, first {st['eval_windows']} test windows of {st['seqlen']}; "
             f"dense ppl {results['dense']:.3f}; torch {st['torch']}, {st['threads']} threads.", ""]
    rows = []
    for rule in rules:
        row = [rule]
        for s, o in cols:
            v = list(cell.get((rule, s, o), {}).values())
            row.append(f"{mean_sd(v)} (n={len(v)})" if v else "–")
        rows.append(row)
    lines += [md(head, rows), "",
              "Paired by seed: ppl(rule) / ppl(uniform) − 1 on the same calibration windows and "
              "order (negative: the rule is better than uniform); mean ± sd over seeds.", ""]
    rows = []
    for rule in rules:
        if rule == "uniform":
            continue
        row = [rule]
        for s, o in cols:
            base, mine = cell.get(("uniform", s, o), {}), cell.get((rule, s, o), {})
            rel = [mine[k] / base[k] - 1 for k in sorted(set(base) & set(mine))]
            row.append(f"{mean_sd([100 * x for x in rel], pct=True)} (n={len(rel)})" if rel else "–")
        rows.append(row)
    lines.append(md(head, rows))
    orders = sorted({o for _, o in cols})
    if len(orders) == 2:
        lines += ["", "Paired by seed and rule: ppl(parallel) / ppl(sequential) − 1.", ""]
        rows = []
        for rule in rules:
            row = [rule]
            for s in sorted({s for s, _ in cols}):
                a, b = cell.get((rule, s, "sequential"), {}), cell.get((rule, s, "parallel"), {})
                rel = [b[k] / a[k] - 1 for k in sorted(set(a) & set(b))]
                row.append(f"{mean_sd([100 * x for x in rel], pct=True)} (n={len(rel)})" if rel else "–")
            rows.append(row)
        lines.append(md(["rule"] + [f"{s:.0%}" for s in sorted({s for s, _ in cols})], rows))
    return "\n".join(lines)


def mean_sd(v: list[float], pct: bool = False) -> str:
    """Mean ± sd; one value has no sd, so it is shown alone (not "± nan")."""
    mean = f"{statistics.fmean(v):+.1f}%" if pct else f"{statistics.fmean(v):.2f}"
    if len(v) < 2:
        return mean
    sd = statistics.stdev(v)
    return f"{mean} ± {sd:.1f}%" if pct else f"{mean} ± {sd:.2f}"


def md(head, rows) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
