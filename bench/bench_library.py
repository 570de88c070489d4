"""Benchmark: the library metrics (± OBS reconstruction) on one model, WikiText-2 test perplexity.

Rows: dense, then each library metric with and without ``--reconstruct``; columns: 50%,
60%, 70% unstructured (per-row comparison, Wanda's default; with ``--reconstruct`` the
prune command's default, SparseGPT's one threshold over all rows of each 128-column block),
2:4 and 4:8. ``gblm`` gets GBLM's weighting for the calibration size, alpha = 100·√nsamples
(the library default 566 is for 32 samples). The model is
loaded once; the dense weights are restored between runs; ``G`` (for gradient metrics) is
computed once on the dense model and reused. Every finished cell is appended to
``<out>/results_<model>.json``, and a rerun with the same settings skips the cells
already there, so a stopped run resumes.

    python bench/bench_library.py --model smollm2-135m --nsamples 16 --eval-windows 16

Prints and writes ``<out>/results_<model>.md`` (a Markdown table with the settings and run
time in its header) and ``<out>/results_<model>.png`` (perplexity vs sparsity).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

import prunedsl
from prunedsl.config import parse_pattern
from prunedsl.runtime.data import calibration_windows, load_text, tokenize
from prunedsl.runtime.models import load_model
from prunedsl.runtime.workbench import Workbench

METRICS = ("magnitude", "wanda", "ria", "sparsegpt", "pruner_zero", "gblm")
COLUMNS = ("0.5", "0.6", "0.7", "2:4", "4:8")


def _column(col: str) -> tuple[float, tuple[int, int] | None, str]:
    """'0.5' -> (0.5, None, '50%'); '2:4' -> (0.5, (2, 4), '2:4')."""
    if ":" in col:
        n, m = parse_pattern(col)
        return n / m, (n, m), col
    return float(col), None, f"{float(col):.0%}"


def _gblm_alpha(nsamples: int) -> float:
    """GBLM's 100 × its averaged ‖X‖, in our summed ‖X‖'s scale: 100·√nsamples."""
    return round(100 * math.sqrt(nsamples), 1)


def _metric_text(name: str, nsamples: int) -> str:
    return f"gblm(alpha = {_gblm_alpha(nsamples)})" if name == "gblm" else name


def _settings(args: argparse.Namespace) -> dict:
    return {"model": args.model, "nsamples": args.nsamples, "seqlen": args.seqlen, "seed": args.seed,
            "eval_windows": args.eval_windows, "group": "row", "reconstruct_group": args.reconstruct_group,
            "gblm_alpha": _gblm_alpha(args.nsamples), "calibration": "wikitext-2 validation",
            "threads": torch.get_num_threads()}


def _load_done(path: Path, settings: dict) -> dict:
    if not path.exists():
        return {"settings": settings, "cells": {}}
    saved = json.loads(path.read_text())
    if saved.get("settings") != settings:
        sys.exit(f"{path} was made with other settings {saved.get('settings')}; move it away first")
    return saved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--metrics", nargs="+", default=list(METRICS))
    p.add_argument("--reconstruct", nargs="*", default=None, metavar="METRIC",
                   help="metrics that also get a +reconstruct row (default: all of --metrics)")
    p.add_argument("--columns", nargs="+", default=list(COLUMNS))
    p.add_argument("--reconstruct-group", choices=("layer", "row"), default="layer",
                   help="selection of the +R rows: layer (default, SparseGPT's one threshold per "
                        "128-column block) or row (the same share of every row of the block)")
    p.add_argument("--nsamples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--eval-windows", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default="docs", help="directory for the .json/.md/.png results")
    p.add_argument("--report-only", action="store_true",
                   help="write the .md/.png from the saved .json without running anything")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rec_metrics = args.metrics if args.reconstruct is None else args.reconstruct
    rows = [r for m in args.metrics for r in ([(m, False)] + ([(m, True)] if m in rec_metrics else []))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"results_{args.model}"
    settings = _settings(args)
    state = _load_done(stem.with_suffix(".json"), settings)
    cells: dict = state["cells"]
    if args.report_only:
        write_report(state, stem)
        return

    def save() -> None:
        stem.with_suffix(".json").write_text(json.dumps(state, indent=1))

    t_start = time.perf_counter()
    loaded = load_model(args.model)
    test_ids = tokenize(loaded.tokenizer, load_text("test"))
    calib = calibration_windows(tokenize(loaded.tokenizer, load_text("validation")),
                                args.nsamples, args.seqlen, args.seed)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"{args.model}: {len(rows)} rows x {len(args.columns)} columns, torch threads "
        f"{torch.get_num_threads()}")
    bench = Workbench(loaded, calib, progress=False)  # keeps the dense weights and G
    if "dense" not in cells:
        res = bench.perplexity(test_ids, seqlen=args.seqlen, max_windows=args.eval_windows)
        cells["dense"] = {"ppl": res["ppl"], "eval_seconds": res["seconds"]}
        save()
    metrics = {m: prunedsl.parse(_metric_text(m, args.nsamples)) for m in args.metrics}
    timed_gradients = False
    for col in args.columns:  # column by column: the 50% column (the ordering) comes first
        for (name, rec) in rows:
            metric = metrics[name]
            key = f"{name}{'+R' if rec else ''}@{col}"
            if key in cells:
                continue
            if "G" in metric.requires and not timed_gradients:  # once, timed on its own
                t = time.perf_counter()
                bench.gradients()
                state["gradient_seconds"], timed_gradients = time.perf_counter() - t, True
                log(f"G over {args.nsamples} windows: {state['gradient_seconds']:.1f} s")
            sparsity, pattern, _ = _column(col)
            # magnitude reads no statistic: one calibration window only drives the block loop
            ids = calib[:1] if metric.requires == {"W"} and not rec else calib
            pruned = bench.prune(metric, sparsity=sparsity, pattern=pattern, reconstruct=rec,
                                 group=settings["reconstruct_group"] if rec else settings["group"],
                                 calib=ids)
            report, prune_s = pruned.report, pruned.seconds["prune"]
            res = bench.perplexity(test_ids, seqlen=args.seqlen, max_windows=args.eval_windows)
            cells[key] = {"ppl": res["ppl"], "sparsity": report.sparsity, "prune_seconds": prune_s,
                          "eval_seconds": res["seconds"], "seconds": report.seconds}
            save()
            log(f"{key:24s} ppl {res['ppl']:10.3f}  prune {prune_s:6.1f} s  eval {res['seconds']:5.1f} s")
    bench.restore()
    state["last_run_seconds"] = time.perf_counter() - t_start
    state["invocations"] = state.get("invocations", 0) + 1
    state["rows"] = [f"{m}{'+R' if r else ''}" for m, r in rows]
    state["columns"] = args.columns
    state["formulas"] = {m: metrics[m].pretty() for m in args.metrics}
    state["env"] = {"torch": torch.__version__, "python": platform.python_version(),
                    "source": loaded.source}
    save()
    write_report(state, stem)


def write_report(state: dict, stem: Path) -> None:
    table = markdown(state)
    print(table)
    stem.with_suffix(".md").write_text(table + "\n")
    plot(state, stem.with_suffix(".png"))
    print(f"wrote {stem}.md, .png", file=sys.stderr)


def markdown(state: dict) -> str:
    s, cells = state["settings"], state["cells"]
    cols = state["columns"]
    # Cells are saved as they finish and a rerun skips them, so a table may come from
    # several invocations: report the measured compute per cell, summed, not one wall clock.
    prune_s = sum(c.get("prune_seconds", 0.0) for c in cells.values())
    eval_s = sum(c.get("eval_seconds", 0.0) for c in cells.values())
    head = (f"### {s['model']}: WikiText-2 test perplexity (seqlen {s['seqlen']}, first "
            f"{s['eval_windows']} windows)\n\n"
            f"Calibration: {s['nsamples']} × {s['seqlen']} tokens of {s['calibration']} (seed "
            f"{s['seed']}); comparison group per output row; +R = `--reconstruct` (SparseGPT's OBS "
            f"update, masks chosen per 128-column block on the updated weights, "
            + ("one threshold over all rows of the block as in SparseGPT"
               if s.get("reconstruct_group", "layer") == "layer" else "the same share of every row of the block")
            + f"); gblm with alpha = {s['gblm_alpha']:g} "
            f"(100·√nsamples). Run time, "
            f"summed over the {len(cells)} cells: {(prune_s + eval_s) / 60:.0f} min "
            f"(pruning {prune_s / 60:.0f} min, evaluation {eval_s / 60:.0f} min) on "
            f"{s['threads']} torch thread(s)")
    if "gradient_seconds" in state:
        head += f", plus {state['gradient_seconds']:.0f} s for G over {s['nsamples']} windows"
    if state.get("invocations", 1) > 1 or "run_seconds" in state:
        head += ("; the cells were measured in several resumed invocations, some on a machine "
                 "shared with other jobs, so per-cell seconds vary with load")
    head += ".\n"
    labels = [_column(c)[2] for c in cols]
    lines = [head, "| metric | " + " | ".join(labels) + " |",
             "| --- | " + " | ".join("---:" for _ in cols) + " |",
             "| dense | " + " | ".join(f"{cells['dense']['ppl']:.2f}" for _ in cols) + " |"]
    for row in state["rows"]:
        vals = []
        for c in cols:
            cell = cells.get(f"{row}@{c}")
            vals.append("—" if cell is None else _fmt(cell["ppl"]))
        lines.append(f"| {row.replace('+R', ' +R')} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _fmt(ppl: float) -> str:
    return "inf" if not math.isfinite(ppl) else (f"{ppl:.2f}" if ppl < 1e4 else f"{ppl:.2e}")


def plot(state: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cells, cols = state["cells"], state["columns"]
    unstructured = [c for c in cols if ":" not in c]
    nm = [c for c in cols if ":" in c]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    colors = {}
    for row in state["rows"]:
        name, rec = row.replace("+R", ""), row.endswith("+R")
        color = colors.setdefault(name, f"C{len(colors)}")
        style = dict(color=color, linestyle="--" if rec else "-", marker="s" if rec else "o")
        xs = [float(c) for c in unstructured if f"{row}@{c}" in cells]
        ys = [cells[f"{row}@{c}"]["ppl"] for c in unstructured if f"{row}@{c}" in cells]
        axes[0].plot([100 * x for x in xs], ys, label=row.replace("+R", " + OBS"), **style)
        xi = [i for i, c in enumerate(nm) if f"{row}@{c}" in cells]
        axes[1].plot(xi, [cells[f"{row}@{nm[i]}"]["ppl"] for i in xi], linestyle="none",
                     marker=style["marker"], color=color, fillstyle="none" if rec else "full")
    for ax in axes:
        ax.axhline(cells["dense"]["ppl"], color="grey", linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_xlabel("unstructured sparsity (%)")
    axes[0].set_ylabel("WikiText-2 test perplexity")
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].set_xticks(range(len(nm)), nm)
    axes[1].set_xlim(-0.5, len(nm) - 0.5)
    axes[1].set_xlabel("N:M (50%); hollow = + OBS")
    s = state["settings"]
    fig.suptitle(f"{s['model']}: library metrics, calibration {s['nsamples']}×{s['seqlen']}, "
                 f"{s['eval_windows']} test windows (dotted: dense)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
