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

Zero-shot columns: ``--tasks NAMES`` also runs lm-eval tasks (``runtime.tasks.run_tasks``, 0-shot,
the first ``--task-limit`` documents) on the pruned model in memory for the ``--task-columns``
(default 50% only) and on the dense model; each result goes into its cell's record under
``zero_shot`` and the table gains one column per task and column (acc_norm ± lm-eval's stderr,
acc for tasks without it). Cells measured earlier without the tasks are pruned again for them
only: their stored ppl is kept, and a re-pruned ppl that differs is stored as ``ppl_rerun`` with a
warning. Offline, write the next-sentence task (a WikiText-2 *validation* sentence, then its true
next sentence among three others; ``prunedsl.runtime.testing.next_sentence_docs``, seed 0) first:

    python bench/bench_library.py --make-next-sentence-task tasks --task-docs 500
    python bench/bench_library.py --model smollm2-135m --nsamples 8 --eval-windows 8 --threads 1 \
        --out docs --tasks next_sentence --tasks-dir tasks

(all 500 documents; ``--task-limit N`` evaluates the first N of them, and every cell of one
results file must use the same N).
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

TASK_SEED = 0   # the next-sentence documents: which sentences, which distractors, where the true one goes
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


def make_next_sentence_task(directory: str, n: int, data_dir: str | None = None) -> str:
    """The offline next_sentence task from WikiText-2 validation (seed TASK_SEED) in ``directory``."""
    from prunedsl.runtime.testing import next_sentence_docs, write_next_sentence_task
    try:
        docs = next_sentence_docs(load_text("validation", data_dir=data_dir), n, seed=TASK_SEED)
    except ValueError as err:
        sys.exit(f"--task-docs {n}: {err}")
    return write_next_sentence_task(directory, docs)


def _check_task_limit(cells: dict, limit: int | None, path: Path) -> None:
    """Zero-shot results already saved must be over the same documents as new ones."""
    saved = {c["zero_shot"]["limit"] for c in cells.values() if "zero_shot" in c}
    if saved and saved != {limit}:
        sys.exit(f"{path} holds zero-shot results with --task-limit {' '.join(map(str, saved))}, not {limit}; "
                 f"give that limit or another --out")


def _task_metric(scores: dict) -> str:
    """The accuracy a task's column shows: acc_norm where lm-eval reports it, else acc."""
    return "acc_norm" if "acc_norm" in scores else "acc"


def main(argv: list[str] | None = None) -> None:
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
    p.add_argument("--data-dir", default=None, help="WikiText-2 directory (default: the usual places)")
    p.add_argument("--out", default="docs", help="directory for the .json/.md/.png results")
    p.add_argument("--report-only", action="store_true",
                   help="write the .md/.png from the saved .json without running anything")
    g = p.add_argument_group("zero-shot tasks (lm-eval)")
    g.add_argument("--tasks", nargs="+", default=None, metavar="NAME",
                   help="lm-eval tasks run on the dense model and on the cells of --task-columns")
    g.add_argument("--tasks-dir", default=None, metavar="DIR", help="a directory of lm-eval task YAML files")
    g.add_argument("--task-limit", type=int, default=None, metavar="N", help="first N documents of each task")
    g.add_argument("--task-batch", type=int, default=1, metavar="B",
                   help="lm-eval batch size (its Hugging Face wrapper pads each batch; 1: no padding)")
    g.add_argument("--task-columns", nargs="+", default=["0.5"], metavar="COL",
                   help="columns whose cells get the tasks (default 0.5)")
    g.add_argument("--make-next-sentence-task", default=None, metavar="DIR",
                   help="write the offline next_sentence task (from WikiText-2 validation) to DIR; "
                        "without --tasks, only that (with --tasks, DIR is the default --tasks-dir)")
    g.add_argument("--task-docs", type=int, default=500, metavar="N", help="its number of documents (default 500)")
    args = p.parse_args(argv)
    if args.make_next_sentence_task:
        name = make_next_sentence_task(args.make_next_sentence_task, args.task_docs, args.data_dir)
        print(f"wrote the task {name} ({args.task_docs} documents from WikiText-2 validation, seed "
              f"{TASK_SEED}) to {args.make_next_sentence_task}: --tasks {name} --tasks-dir "
              f"{args.make_next_sentence_task}", file=sys.stderr)
        if not args.tasks:
            return
        args.tasks_dir = args.tasks_dir or args.make_next_sentence_task
    if args.threads:
        torch.set_num_threads(args.threads)
    rec_metrics = args.metrics if args.reconstruct is None else args.reconstruct
    rows = [r for m in args.metrics for r in ([(m, False)] + ([(m, True)] if m in rec_metrics else []))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # an alias names the files as before; a local model its directory, a hub id without its "/"
    label = Path(args.model).name if Path(args.model).exists() else args.model.replace("/", "--")
    stem = out / f"results_{label}"
    settings = _settings(args)
    state = _load_done(stem.with_suffix(".json"), settings)
    cells: dict = state["cells"]
    if args.report_only:
        write_report(state, stem)
        return
    tasks, manager = [], None
    if args.tasks:
        from prunedsl.errors import PruneDSLError
        from prunedsl.runtime.tasks import parse_task_list, run_tasks, task_manager
        unknown = [c for c in args.task_columns if c not in args.columns]
        if unknown:
            sys.exit(f"--task-columns {' '.join(unknown)}: not among --columns {' '.join(args.columns)}")
        _check_task_limit(cells, args.task_limit, stem.with_suffix(".json"))
        try:  # task names checked before the model loads
            tasks = parse_task_list(",".join(args.tasks))
            manager = task_manager(tasks, args.tasks_dir)
        except PruneDSLError as err:
            sys.exit(err.render())

    def save() -> None:
        stem.with_suffix(".json").write_text(json.dumps(state, indent=1))

    t_start = time.perf_counter()
    loaded = load_model(args.model)
    test_ids = tokenize(loaded.tokenizer, load_text("test", data_dir=args.data_dir))
    calib = calibration_windows(tokenize(loaded.tokenizer, load_text("validation", data_dir=args.data_dir)),
                                args.nsamples, args.seqlen, args.seed)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"{args.model}: {len(rows)} rows x {len(args.columns)} columns, torch threads "
        f"{torch.get_num_threads()}")
    bench = Workbench(loaded, calib, progress=False)  # keeps the dense weights and G

    def missing_tasks(cell: dict | None) -> list[str]:
        done = (cell or {}).get("zero_shot", {}).get("tasks", {})
        return [t for t in tasks if t not in done]

    def zero_shot(cell: dict, todo: list[str], key: str) -> None:
        """lm-eval ``todo`` on the model as it is now, merged into the cell's record."""
        zs = run_tasks(loaded.model, loaded.tokenizer, todo, limit=args.task_limit,
                       tasks_dir=args.tasks_dir, manager=manager, batch_size=args.task_batch).to_dict()
        zs["batch_size"] = args.task_batch
        if "zero_shot" in cell:
            cell["zero_shot"]["tasks"].update(zs["tasks"])
            cell["zero_shot"]["seconds"] += zs["seconds"]
        else:
            cell["zero_shot"] = zs
        log(f"{key:24s} " + "  ".join(f"{t} {_task_metric(v)} {v[_task_metric(v)]:.3f}"
                                      for t, v in zs["tasks"].items()) + f"  ({zs['seconds']:.0f} s)")

    if "dense" not in cells:
        res = bench.perplexity(test_ids, seqlen=args.seqlen, max_windows=args.eval_windows)
        cells["dense"] = {"ppl": res["ppl"], "eval_seconds": res["seconds"]}
        save()
    if missing_tasks(cells["dense"]):
        bench.restore()
        zero_shot(cells["dense"], missing_tasks(cells["dense"]), "dense")
        save()
    metrics = {m: prunedsl.parse(_metric_text(m, args.nsamples)) for m in args.metrics}
    timed_gradients = False
    for col in args.columns:  # column by column: the 50% column (the ordering) comes first
        for (name, rec) in rows:
            metric = metrics[name]
            key = f"{name}{'+R' if rec else ''}@{col}"
            cell = cells.get(key)
            todo = missing_tasks(cell) if col in args.task_columns else []
            if cell is not None and not todo:
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
            if cell is None:
                cell = cells[key] = {"ppl": res["ppl"], "sparsity": report.sparsity, "prune_seconds": prune_s,
                                     "eval_seconds": res["seconds"], "seconds": report.seconds}
            elif res["ppl"] != cell["ppl"]:  # pruned again for the tasks: the stored ppl stays the table's
                cell["ppl_rerun"] = res["ppl"]
                rel = res["ppl"] / cell["ppl"] - 1   # 6 digits can hide a last-bit difference
                log(f"warning: {key} pruned again for the tasks gives ppl {res['ppl']:.6g}, stored "
                    f"{cell['ppl']:.6g} ({rel:+.1e} relative; kept; the rerun is saved as ppl_rerun, "
                    f"its model took the tasks)")
            log(f"{key:24s} ppl {res['ppl']:10.3f}  prune {prune_s:6.1f} s  eval {res['seconds']:5.1f} s")
            if todo:
                zero_shot(cell, todo, key)
            save()
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
    task_s = sum(c["zero_shot"]["seconds"] for c in cells.values() if "zero_shot" in c)
    head = (f"### {s['model']}: WikiText-2 test perplexity (seqlen {s['seqlen']}, first "
            f"{s['eval_windows']} windows)\n\n"
            f"Calibration: {s['nsamples']} × {s['seqlen']} tokens of {s['calibration']} (seed "
            f"{s['seed']}); comparison group per output row; +R = `--reconstruct` (SparseGPT's OBS "
            f"update, masks chosen per 128-column block on the updated weights, "
            + ("one threshold over all rows of the block as in SparseGPT"
               if s.get("reconstruct_group", "layer") == "layer" else "the same share of every row of the block")
            + f"); gblm with alpha = {s['gblm_alpha']:g} "
            f"(100·√nsamples). Run time, "
            f"summed over the {len(cells)} cells: {(prune_s + eval_s + task_s) / 60:.0f} min "
            f"(pruning {prune_s / 60:.0f} min, evaluation {eval_s / 60:.0f} min"
            + (f", zero-shot tasks {task_s / 60:.0f} min" if task_s else "") + ") on "
            f"{s['threads']} torch thread(s)")
    if "gradient_seconds" in state:
        head += f", plus {state['gradient_seconds']:.0f} s for G over {s['nsamples']} windows"
    if state.get("invocations", 1) > 1 or "run_seconds" in state:
        head += ("; the cells were measured in several resumed invocations, some on a machine "
                 "shared with other jobs, so per-cell seconds vary with load")
    head += ".\n"
    labels = [_column(c)[2] for c in cols]
    zs_cols = zero_shot_columns(state)
    labels += [f"{task} {metric} ({_column(c)[2]})" for task, metric, c in zs_cols]
    lines = [head, "| metric | " + " | ".join(labels) + " |",
             "| --- | " + " | ".join("---:" for _ in labels) + " |",
             "| dense | " + " | ".join([f"{cells['dense']['ppl']:.2f}" for _ in cols]
                                      + [_zs_cell(cells["dense"], t, m) for t, m, _ in zs_cols]) + " |"]
    for row in state["rows"]:
        vals = []
        for c in cols:
            cell = cells.get(f"{row}@{c}")
            vals.append("—" if cell is None else _fmt(cell["ppl"]))
        vals += [_zs_cell(cells.get(f"{row}@{c}"), t, m) for t, m, c in zs_cols]
        lines.append(f"| {row.replace('+R', ' +R')} | " + " | ".join(vals) + " |")
    if zs_cols:
        records = [c["zero_shot"] for c in cells.values() if "zero_shot" in c]
        limit = records[0]["limit"]
        lines += ["", f"Zero-shot columns: lm-eval {records[0]['lm_eval']}, 0-shot, "
                  + (f"the first {limit} documents of each task" if limit else "every document of each task")
                  + ", on the pruned model in memory; accuracy ± lm-eval's standard error (acc_norm: "
                    "log-likelihood per character). The dense row is the unpruned model."]
    return "\n".join(lines)


def zero_shot_columns(state: dict) -> list[tuple[str, str, str]]:
    """(task, acc name, column) for every column with zero-shot results, in the table's order."""
    cells = state["cells"]
    out = []
    for col in state["columns"]:
        records = [cells[k]["zero_shot"]["tasks"] for k in [f"{r}@{col}" for r in state["rows"]]
                   if "zero_shot" in cells.get(k, {})]
        tasks: dict[str, str] = {}
        for rec in records:
            for task, scores in rec.items():
                if tasks.get(task) != "acc_norm":
                    tasks[task] = _task_metric(scores)
        out += [(task, metric, col) for task, metric in tasks.items()]
    return out


def _zs_cell(cell: dict | None, task: str, metric: str) -> str:
    scores = (cell or {}).get("zero_shot", {}).get("tasks", {}).get(task)
    if not scores or metric not in scores:
        return "—"
    err = scores.get(f"{metric}_stderr")
    return f"{scores[metric]:.3f}" + (f" ± {err:.3f}" if isinstance(err, float) else "")


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
