"""Benchmark: task-specific calibration (LLM-Sieve's setting) with Python source as the task.

Calibrate on one kind of text, evaluate on held-out text of that kind and on WikiText-2: how
much more of its task does a task-calibrated model keep than of general text? The task text is
the installed Python standard library's source (offline, ``bench/python_corpus.py``: whole
files split ~80/20 into calibration and held-out text by a stable hash of their paths).

    python bench/bench_task_specific.py --model smollm2-135m --threads 2 \\
        --corpus-dir /tmp/pycorpus --out /tmp/task_specific_smollm2-135m.json
    python bench/bench_task_specific.py --quick          # tiny random Llama, seconds: smoke test
    python bench/bench_task_specific.py --out FILE --table-only

For each metric (``--metrics``, default wanda) × sparsity (default 50/60/70%) × calibration
source (WikiText-2 validation, or the Python calibration text; the same ``--nsamples`` ×
``--seqlen`` windows, seed ``--seed``) the model is pruned and scored by perplexity on the
Python held-out text and on WikiText-2 test (the first ``--eval-windows`` non-overlapping
windows of ``--seqlen`` tokens of each), as is the dense model. Same path as
``prunedsl prune --calib-data FILE --eval-data FILE`` (``runtime.workbench.Workbench``; a text
file is read by ``runtime.data.load_text``, which puts a blank line between lines as for
WikiText-2). Every finished run is appended to ``--out``; a rerun skips those there and refuses
a file made with other settings or another corpus.

``--search-budget N`` also runs ``prunedsl search --proposer evolve`` at each sparsity
(a subprocess, its state in ``<out>.search/``; a rerun resumes it) with the Python calibration
text as both ``--calib-data`` and ``--eval-data``: the fitness reads the first val-windows ×
seqlen tokens of that file and calibrates on the rest, so the search never sees the held-out
text. Its best formula becomes a row ``search@S`` pruned and measured like the others.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # python_corpus, when loaded by path
import python_corpus  # noqa: E402

SOURCES = ("wikitext", "python")   # calibration sources, in table order
SOURCE_LABEL = {"wikitext": "WikiText-2", "python": "Python"}
SEARCH_FITNESS = {"nsamples": 16, "seqlen": 256, "val_windows": 16}   # the search's own defaults
QUICK = {"nsamples": 4, "seqlen": 64, "eval_windows": 2, "corpus_mb": 0.1}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--metrics", nargs="+", default=["wanda"], help="library names or formulas")
    ap.add_argument("--sparsities", nargs="+", type=float, default=[0.5, 0.6, 0.7])
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None, help="WikiText-2 directory (default: the usual places)")
    ap.add_argument("--corpus-dir", default="/tmp/prunedsl_python_corpus",
                    help="where the Python texts are written (reused when already there)")
    ap.add_argument("--corpus-mb", type=float, default=4.0,
                    help="size cap of the Python corpus, both texts together (files in hash order)")
    ap.add_argument("--search-budget", type=int, default=0, metavar="N",
                    help="also search (evolve) N candidates per sparsity on the Python text (0: no search)")
    ap.add_argument("--search-full-evals", type=int, default=4, metavar="K",
                    help="candidates the search prunes for real (default 4)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default="/tmp/bench_task_specific.json")
    ap.add_argument("--table-only", action="store_true", help="print the tables of --out")
    ap.add_argument("--quick", action="store_true",
                    help="a tiny random Llama, tiny settings and a 0.1 MB corpus: checks the bench runs")
    args = ap.parse_args(argv)
    if args.quick and not args.table_only:
        from prunedsl.runtime.testing import save_tiny_workspace
        beside = None if args.out == ap.get_default("out") else Path(args.out).resolve().parent  # not /tmp's
        if beside is not None:
            beside.mkdir(parents=True, exist_ok=True)
        ws = save_tiny_workspace(Path(tempfile.mkdtemp(prefix="bench_task_specific_", dir=beside)),
                                 char_tokenizer=True)
        args.model, args.data_dir = str(ws / "model"), str(ws / "data")
        args.nsamples, args.seqlen, args.eval_windows = QUICK["nsamples"], QUICK["seqlen"], QUICK["eval_windows"]
        args.corpus_mb = QUICK["corpus_mb"]
        if args.corpus_dir == ap.get_default("corpus_dir"):
            args.corpus_dir = str(ws / "corpus")
        if args.out == ap.get_default("out"):
            args.out = str(ws / "bench.json")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"runs": [], "dense": None, "searches": {}}
    if args.table_only:
        print(tables(results))
        return
    try:
        manifest = python_corpus.ensure_corpus(Path(args.corpus_dir), args.corpus_mb)
    except python_corpus.CorpusError as err:
        sys.exit(str(err))

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from prunedsl.api import parse
    from prunedsl.runtime import data
    from prunedsl.runtime.models import load_model
    from prunedsl.runtime.workbench import Workbench

    settings = {"model": args.model, "nsamples": args.nsamples, "seqlen": args.seqlen, "seed": args.seed,
                "eval_windows": args.eval_windows, "corpus_sha256": manifest["sha256"],
                "corpus_mb": args.corpus_mb}
    if results.get("settings") and any(results["settings"].get(k) != v for k, v in settings.items()):
        sys.exit(f"{out} was made with other settings or another corpus ({results['settings']}); use another --out")
    results["settings"] = {**settings, "torch": torch.__version__, "threads": torch.get_num_threads()}
    results["corpus"] = {k: manifest[k] for k in ("version", "python", "stdlib", "cap_mb", "calib_percent", "files",
                                                   "bytes", "sha256", "skipped_not_utf8", "skipped_generated")}
    results.setdefault("searches", {})

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))

    save()
    if args.search_budget > 0:
        for s in args.sparsities:
            if f"{s:g}" not in results["searches"]:
                results["searches"][f"{s:g}"] = run_search(args, s, manifest["paths"]["calib"], out)
                save()

    loaded = load_model(args.model)
    tok = loaded.tokenizer
    evals = {"python": data.tokenize(tok, data.load_text(path=manifest["paths"]["heldout"], what="held-out text")),
             "wikitext": data.tokenize(tok, data.load_text("test", data_dir=args.data_dir))}
    calib_ids = {"wikitext": data.tokenize(tok, data.load_text("validation", data_dir=args.data_dir)),
                 "python": data.tokenize(tok, data.load_text(path=manifest["paths"]["calib"]))}

    def measure(bench) -> dict:
        t0 = time.perf_counter()
        ppl = {f"ppl_{name}": bench.perplexity(ids, seqlen=args.seqlen, max_windows=args.eval_windows)["ppl"]
               for name, ids in evals.items()}
        return {**ppl, "eval_seconds": time.perf_counter() - t0}

    if results.get("dense") is None:
        results["dense"] = measure(Workbench(loaded, None, progress=False, keep_dense=False))
        save()
    log(f"dense: ppl Python {results['dense']['ppl_python']:.3f}, WikiText-2 {results['dense']['ppl_wikitext']:.3f}")
    rows = [(m, m, s) for m in args.metrics for s in args.sparsities]          # (label, formula, sparsity)
    rows += [(f"search@{float(k):.0%}", v["text"], float(k)) for k, v in results["searches"].items()
             if float(k) in args.sparsities]
    done = {(r["metric"], r["sparsity"], r["calibration"]) for r in results["runs"]}
    for source in SOURCES:   # one workbench per source: G (gradient metrics) belongs to its calibration
        todo = [r for r in rows if (r[0], r[2], source) not in done]
        if not todo:
            continue
        calib = data.calibration_windows(calib_ids[source], args.nsamples, args.seqlen, args.seed)
        bench = Workbench(loaded, calib, progress=False)
        for label, formula, s in todo:
            metric = parse(formula)
            pruned = bench.prune(metric, sparsity=s)
            run = {"metric": label, "formula": metric.pretty(), "sparsity": s, "calibration": source,
                   **measure(bench), "realized": pruned.report.sparsity, "prune_seconds": pruned.seconds["prune"]}
            results["runs"].append(run)
            save()
            log(f"{label} {s:.0%} calibrated on {source}: ppl Python {run['ppl_python']:.3f}, "
                f"WikiText-2 {run['ppl_wikitext']:.3f} ({run['prune_seconds']:.0f} s prune)")
        bench.restore()
        del bench
    print(tables(results))


def run_search(args: argparse.Namespace, sparsity: float, calib_path: str, out: Path) -> dict:
    """``prunedsl search`` on the Python calibration text (fitness on its first part); its best formula."""
    directory = Path(f"{out}.search") / f"s{sparsity:g}"
    fitness = dict(SEARCH_FITNESS)
    if args.quick:
        fitness = {"nsamples": QUICK["nsamples"], "seqlen": QUICK["seqlen"], "val_windows": 2}
    cmd = [sys.executable, "-m", "prunedsl", "search", "--model", args.model, "--sparsity", f"{sparsity:g}",
           "--proposer", "evolve", "--budget", str(args.search_budget), "--full-evals", str(args.search_full_evals),
           "--seed", str(args.seed), "--calib-data", calib_path, "--eval-data", calib_path,
           "--nsamples", str(fitness["nsamples"]), "--seqlen", str(fitness["seqlen"]),
           "--val-windows", str(fitness["val_windows"]), "--output", str(directory),
           "--no-report", "--quiet", "--format", "json"]
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    cmd += ["--resume"] if (directory / "state.json").is_file() else []
    log(f"search at {sparsity:.0%}: {' '.join(cmd[2:])}")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    if done.returncode != 0:
        sys.exit(f"the search at {sparsity:.0%} failed (exit {done.returncode}); its state is in {directory}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    best = summary.get("best")
    if not best:
        sys.exit(f"the search at {sparsity:.0%} evaluated no candidate fully; raise --search-full-evals")
    return {"text": best["text"], "pretty": best["pretty"], "val_ppl": best["val_ppl"], "name": best.get("name"),
            "output": str(directory), "budget": args.search_budget, "full_evals": args.search_full_evals,
            "fitness": fitness, "counters": summary.get("counters"), "seconds": time.perf_counter() - t0}


def tables(results: dict) -> str:
    """The Markdown report: every run with its kept ratios, then the Python calibration's advantage."""
    if not results.get("runs") or not results.get("dense"):
        return "(no runs yet)"
    st, dense = results["settings"], results["dense"]
    corpus = results.get("corpus", {})
    files = corpus.get("files", {})
    lines = [f"{st['model']}: perplexity on held-out Python source ({len(files.get('heldout', []))} files of the "
             f"Python {corpus.get('python', '?')} standard library, sha256 {st['corpus_sha256']['heldout'][:12]}) "
             f"and on WikiText-2 test, first {st['eval_windows']} windows of {st['seqlen']} tokens each; calibration "
             f"{st['nsamples']} × {st['seqlen']} tokens (seed {st['seed']}) of WikiText-2 validation or of the "
             f"Python calibration text ({len(files.get('calib', []))} other files); torch {st.get('torch', '?')}, "
             f"{st.get('threads', '?')} threads.", "",
             md(["metric", "sparsity", "calibration", "ppl Python held-out", "ppl WikiText-2",
                 "kept Python", "kept WikiText-2"],
                [["dense", "0%", "–", f"{dense['ppl_python']:.3f}", f"{dense['ppl_wikitext']:.3f}", "1.000", "1.000"]]
                + [[r["metric"], f"{r['sparsity']:.0%}", SOURCE_LABEL[r["calibration"]], f"{r['ppl_python']:.3f}",
                    f"{r['ppl_wikitext']:.3f}", f"{dense['ppl_python'] / r['ppl_python']:.3f}",
                    f"{dense['ppl_wikitext'] / r['ppl_wikitext']:.3f}"] for r in sorted_runs(results["runs"])]),
             "", "kept = dense perplexity / pruned perplexity on that text: 1 = nothing lost, 0.5 = the "
             "perplexity doubled.", ""]
    by_key = {(r["metric"], r["sparsity"], r["calibration"]): r for r in results["runs"]}
    pairs = sorted({(m, s) for m, s, _ in by_key if all((m, s, c) in by_key for c in SOURCES)},
                   key=lambda k: (_metric_order(results["runs"], k[0]), k[1]))
    rows = []
    for m, s in pairs:
        wiki, py = by_key[(m, s, "wikitext")], by_key[(m, s, "python")]
        rows.append([m, f"{s:.0%}", f"{wiki['ppl_python'] / py['ppl_python']:.3f}",
                     f"{wiki['ppl_wikitext'] / py['ppl_wikitext']:.3f}"])
    lines += ["Advantage of calibrating on Python: ppl(WikiText-calibrated) / ppl(Python-calibrated), on "
              "each evaluation text (> 1: the Python-calibrated model is better there; < 1: worse).", "",
              md(["metric", "sparsity", "on Python held-out", "on WikiText-2"], rows)]
    searches = results.get("searches") or {}
    if searches:
        lines += ["", "Searched formulas (prunedsl search --proposer evolve on the Python calibration text, "
                  "fitness on its first part):", ""]
        lines += [f"- search@{float(k):.0%}: `{v['pretty']}` (val ppl {v['val_ppl']:.3f}, budget {v['budget']}, "
                  f"{v['full_evals']} full evaluations)" for k, v in searches.items()]
    return "\n".join(lines)


def _metric_order(runs: list[dict], metric: str) -> int:
    return [r["metric"] for r in runs].index(metric)   # the order the runs were first made in


def sorted_runs(runs: list[dict]) -> list[dict]:
    return sorted(runs, key=lambda r: (_metric_order(runs, r["metric"]), r["sparsity"],
                                       SOURCES.index(r["calibration"])))


def md(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
