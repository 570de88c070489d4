"""Benchmark: how well each fitness the search could use ranks candidates like test perplexity.

A fixed panel (every library metric ± --reconstruct, the hall of fame of the committed run
docs/search_run/2026-11-30_evolve_300/hall.json, and the formulas of ``FORMULAS``: near-ties of Wanda and clearly bad
ones) is pruned at one sparsity (default 60% unstructured, comparison group per row; +R rows
use the prune command's selection for --reconstruct, one threshold per 128-column block).
Each candidate is pruned once, then measured by every fitness:

- the search's proxy (search/fitness.py) in the variants of ``PROXIES`` (no pruning; a +R
  candidate gets its metric's proxy: the proxy cannot see the OBS update);
- validation ppl on the search's default slice (16 windows of 256) and on 4x it (64 windows;
  the first 16 are the default slice), from one forward pass;
- KL(dense ‖ pruned) of the next-token distributions on the same windows (dense top-1024
  + tail, runtime/divergence.py), at both sizes;
- the mean per-token NLL difference to wanda (no +R) on the same tokens, at both sizes
  (rank-identical to val ppl on a fixed slice; its standard error says how paired noise is);
- WikiText-2 test ppl, 40 windows of 512 (docs/design.md §5), the truth the others are
  ranked against, with a 1000-resample bootstrap band over windows and a paired band of its
  ratio to wanda.

The calibration windows (16x256) are drawn after the 4x validation slice (64 windows), so
they share no token with either slice; the search itself cuts after 16 windows, so its
calibration windows differ (both are seeded random windows of the same split).

Every finished candidate is appended to ``<out>/fitness_<model>.json``; a rerun with the same
settings skips what is there (resume). Prints Markdown tables and writes ``<out>/fitness_<model>.md``.

    python bench/bench_fitness.py --model smollm2-135m --out docs        # the study (~1 h, quiet 2-core)
    python bench/bench_fitness.py --quick                                 # tiny random model, seconds
    python bench/bench_fitness.py --table-only --out docs                 # tables from the saved JSON
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fitness_table, when loaded by path
import fitness_table  # noqa: E402

import prunedsl  # noqa: E402
from prunedsl.dsl.library import BUILTIN  # noqa: E402
from prunedsl.runtime import data  # noqa: E402
from prunedsl.runtime.divergence import DEFAULT_TOP_K, dense_reference, evaluate_windows  # noqa: E402
from prunedsl.runtime.models import load_model  # noqa: E402
from prunedsl.search.fitness import Fitness, FitnessSettings  # noqa: E402
from prunedsl.search.recipe import Recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HALL = ROOT / "docs" / "search_run" / "2026-11-30_evolve_300" / "hall.json"

# (formula, why it is in the panel)
FORMULAS = (
    ("|W| * ‖X‖ ^ 0.9", "near-tie"), ("|W| * ‖X‖ ^ 1.1", "near-tie"),
    ("|W| * (‖X‖ + 0.001)", "near-tie"), ("|W| ^ 2 * ‖X‖ ^ 2", "twin of wanda (monotone)"),
    ("|W| * ‖X‖ ^ 0.5", "variant"), ("|W| * ‖X‖ ^ 2", "variant"), ("|W| * ‖X‖₁", "variant"),
    ("|W| * std(X)", "variant"), ("|W| * (‖X‖ + 0.1 * ‖X‖∞)", "variant"),
    ("(|W| / col_sum(|W|) + |W| / row_sum(|W|)) * ‖X‖", "ria, a = 1"),
    ("|W| / col_sum(|W|) * ‖X‖", "variant"), ("|W| / sqrt(hinv)", "twin of sparsegpt (monotone)"),
    ("|W| * ‖X‖ * (1 + minmax(G))", "gradient variant"),
    ("W", "bad"), ("-|W|", "bad"), ("‖X‖", "bad"), ("|W| / ‖X‖", "bad"), ("|W| * mean(X)", "bad"),
)
# name -> FitnessSettings overrides: the search's default proxy and two costlier variants
PROXIES = {
    "proxy": {},
    "proxy_all_blocks": {"proxy_blocks": 0},
    "proxy_exact": {"proxy_blocks": 0, "proxy_rows": 1.0, "proxy_rank": 0},
    "proxy_obs": {},   # the default proxy; a +R candidate's is the error after the OBS update
}
OBS_PROXIES = {"proxy_obs"}   # these score a +R candidate as such (key: its text + " +R")
QUICK = dict(seqlen=16, val_windows=2, nsamples=2, test_seqlen=32, test_windows=10, top_k=16,
             only=["magnitude", "wanda", "wanda +R", "sparsegpt", "|W| * ‖X‖ ^ 0.9", "W", "hall:197"])


def gblm_alpha(nsamples: int) -> float:
    """GBLM's weighting in our summed ‖X‖'s scale (as bench/bench_library.py)."""
    return round(100 * math.sqrt(nsamples), 1)


def panel(nsamples: int, hall: Path = HALL) -> list[dict]:
    """The candidates, in evaluation order: key, text, reconstruct, source, note."""
    out: list[dict] = []
    for name in BUILTIN.of_kind("metric"):
        text = f"gblm(alpha = {gblm_alpha(nsamples)})" if name == "gblm" else name
        for rec in (False, True):
            out.append({"key": name + (" +R" if rec else ""), "text": text, "reconstruct": rec,
                        "source": "library", "note": ""})
    seen = {prunedsl.parse(c["text"]).canonical() for c in out}
    saved = json.loads(hall.read_text())
    for entry in [*saved["front"], saved["best"]]:
        canonical = prunedsl.parse(entry["text"]).canonical()
        if canonical not in seen:
            seen.add(canonical)
            out.append({"key": f"hall:{entry['id']}", "text": entry["text"], "reconstruct": False,
                        "source": "hall", "note": f"val ppl {entry['val_ppl']:.2f} in the run"})
    for text, note in FORMULAS:
        out.append({"key": text, "text": text, "reconstruct": False, "source": "formula", "note": note})
    return out


def settings_of(args) -> dict:
    return {"model": args.model_label, "sparsity": args.sparsity, "nsamples": args.nsamples,
            "seqlen": args.seqlen, "val_windows": args.val_windows, "scale": args.scale,
            "test_seqlen": args.test_seqlen, "test_windows": args.test_windows, "seed": args.seed,
            "top_k": args.top_k, "group": "row", "reconstruct_group": args.reconstruct_group,
            "gblm_alpha": gblm_alpha(args.nsamples)}


def load_state(path: Path, settings: dict) -> dict:
    if not path.exists():
        return {"settings": settings, "proxies": {}, "candidates": {}}
    saved = json.loads(path.read_text())
    if saved.get("settings") != settings:
        sys.exit(f"{path} was made with other settings {saved.get('settings')}; move it away first")
    return saved


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_proxies(args, state, cands, loaded, save) -> Fitness:
    """Every proxy variant on every candidate not yet done; returns the default-proxy Fitness
    (its workbench, calibration windows, G and validation ids serve the full evaluations)."""
    base = dict(model=args.model_label, sparsity=args.sparsity, seqlen=args.seqlen, nsamples=args.nsamples,
                val_windows=args.val_windows * args.scale, seed=args.seed, data_dir=args.data_dir,
                gradients=True)
    main = None
    for name in args.proxies:
        done = state["proxies"].setdefault(name, {})
        obs = name in OBS_PROXIES

        def key(c: dict) -> str:
            return c["text"] + (" +R" if obs and c["reconstruct"] else "")
        todo = [c for c in cands if key(c) not in done]
        if not todo and name != args.proxies[0]:
            continue
        t0 = time.perf_counter()
        fit = Fitness(FitnessSettings(**base, **PROXIES[name]), progress=False, log=log, loaded=loaded)
        if todo:  # a resumed run that only needs the workbench keeps the first timing
            state.setdefault("proxy_setup_seconds", {})[name] = time.perf_counter() - t0
        for c in todo:
            if key(c) in done:                        # ±R share their metric's mask-only proxy
                continue
            recipe = Recipe(reconstruct=True, group=args.reconstruct_group) if obs and c["reconstruct"] else None
            t = time.perf_counter()
            try:
                value = fit.proxy(prunedsl.parse(c["text"]), recipe)
            except prunedsl.PruneDSLError as e:
                value = None
                log(f"{name} {c['key']}: {e}")
            done[key(c)] = {"value": value, "seconds": time.perf_counter() - t}
        save()
        log(f"{name}: {len(todo)} candidates")
        if main is None:
            main = fit
        else:
            fit.bench.restore()
            del fit
    return main


def measure(fit: Fitness, cand: dict | None, args, val_windows, test_windows, ref) -> dict:
    """Prune with ``cand`` (None: dense), measure validation (NLL, KL) and test; restore."""
    rec: dict = {}
    try:
        if cand is not None:
            metric = prunedsl.parse(cand["text"])
            pruned = fit.bench.prune(metric, sparsity=args.sparsity, reconstruct=cand["reconstruct"],
                                     group=args.reconstruct_group if cand["reconstruct"] else "row")
            rec.update(sparsity=pruned.report.sparsity, prune_seconds=pruned.seconds["prune"])
        val = evaluate_windows(fit.model, val_windows, ref)
        test = evaluate_windows(fit.model, test_windows)
    finally:
        fit.bench.restore()
    return {**rec, "val_nll_sums": val.window_nll_sums(), "val_kl_sums": val.kl.double().sum(1).tolist(),
            "val_forward_seconds": val.forward_seconds, "val_kl_seconds": val.kl_seconds,
            "test_nll_sums": test.window_nll_sums(), "test_seconds": test.seconds()}


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"fitness_{args.model_label}"
    state = load_state(stem.with_suffix(".json"), settings_of(args))

    def save() -> None:
        stem.with_suffix(".json").write_text(json.dumps(state, indent=1))

    if args.table_only:
        return fitness_table.write(state, stem)
    cands = panel(args.nsamples)
    if args.only:
        unknown = set(args.only) - {c["key"] for c in cands}
        if unknown:
            sys.exit(f"--only: not in the panel: {sorted(unknown)}")
        cands = [c for c in cands if c["key"] in args.only]
    state["panel"] = {c["key"]: {k: c[k] for k in ("text", "reconstruct", "source", "note")} for c in cands}
    t_start = time.perf_counter()
    loaded = load_model(args.model)
    fit = run_proxies(args, state, cands, loaded, save)
    val_windows = data.eval_windows(fit.val_ids, args.seqlen)                     # (scale·val, seqlen)
    test_ids = data.tokenize(loaded.tokenizer, data.load_text("test", data_dir=args.data_dir))
    test_windows = data.eval_windows(test_ids, args.test_seqlen, args.test_windows)
    fit.bench.restore()
    ref = dense_reference(fit.model, val_windows, top_k=args.top_k)
    state.setdefault("dense_reference", {"seconds": ref.seconds, "tail_mass": ref.tail_mass})
    log(f"dense reference: {ref.seconds:.1f} s, mean dense mass outside the top {args.top_k}: {ref.tail_mass:.4f}")
    if "dense" not in state:
        state["dense"] = measure(fit, None, args, val_windows, test_windows, ref)
        save()
    done = state["candidates"]
    for c in cands:
        if c["key"] in done:
            continue
        try:
            done[c["key"]] = measure(fit, c, args, val_windows, test_windows, ref)
        except prunedsl.PruneDSLError as e:
            done[c["key"]] = {"error": str(e)}
        save()
        r = done[c["key"]]
        log(f"{c['key'][:40]:40s} " + (f"error: {r['error']}" if "error" in r else
            f"prune {r['prune_seconds']:5.1f} s  val+KL {sum(r['val_forward_seconds']) + sum(r['val_kl_seconds']):5.1f} s"
            f"  test {r['test_seconds']:5.1f} s"))
    state["env"] = {"torch": torch.__version__, "python": platform.python_version(), "source": loaded.source,
                    "threads": torch.get_num_threads()}
    state["last_run_seconds"] = time.perf_counter() - t_start
    save()
    fitness_table.write(state, stem)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--sparsity", type=float, default=0.6)
    p.add_argument("--nsamples", type=int, default=16, help="calibration windows (the search's default)")
    p.add_argument("--seqlen", type=int, default=256, help="calibration and validation window length")
    p.add_argument("--val-windows", type=int, default=16, help="the search's default validation slice")
    p.add_argument("--scale", type=int, default=4, help="the larger slice is this many times the default")
    p.add_argument("--test-seqlen", type=int, default=512)
    p.add_argument("--test-windows", type=int, default=40)
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="dense log-probs kept per position for the KL")
    p.add_argument("--reconstruct-group", choices=("layer", "row"), default="layer")
    p.add_argument("--proxies", nargs="+", choices=list(PROXIES), default=list(PROXIES))
    p.add_argument("--only", nargs="+", action="extend", default=None, metavar="KEY",
                   help="panel keys to run (e.g. wanda \"wanda +R\"); a key starting with '-' as --only=KEY "
                        "(argparse reads -|W| as an option otherwise); repeatable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="directory for fitness_<model>.json/.md (default docs; "
                                               "--quick: a temporary directory)")
    p.add_argument("--table-only", action="store_true", help="print the tables of the saved JSON")
    p.add_argument("--quick", action="store_true", help="a tiny random model and tiny sizes (smoke test)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.model_label = args.model
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            from prunedsl.runtime.testing import save_tiny_workspace
            root = save_tiny_workspace(Path(tmp) / "ws")
            args.model, args.model_label, args.data_dir = str(root / "model"), "tiny", str(root / "data")
            for k, v in QUICK.items():
                setattr(args, k, v if k != "only" else (args.only or v))
            args.out = args.out or str(Path(tmp) / "out")
        args.out = args.out or str(ROOT / "docs")
        run(args)


if __name__ == "__main__":
    main()
