"""Search fitness speed: proxy throughput, full-evaluation time, proxy fidelity.

    python bench/bench_search.py                          # smollm2-135m, 60% unstructured
    python bench/bench_search.py --candidates 40 --exact  # + rank correlation with the exact proxy
    python bench/bench_search.py --exact --full 0 --from-state docs/search_run/2026-11-30_evolve_300/state.json

Candidates: the library seeds plus random formulas from the evolve proposer's grower
(fixed seed), or with ``--from-state`` the best-by-proxy candidates of a finished search.
Throughput = candidates screened per minute with the search's default proxy settings
(8 of 30 blocks, 1/4 of the rows, rank-64 Gram). ``--exact`` also scores
them with the exact proxy over every layer and row (XᵀX in full) and reports Spearman's
rank correlation. Prints a Markdown table on stdout; logs on stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time

import torch

from prunedsl.api import parse
from prunedsl.dsl.printer import to_text
from prunedsl.search.engine import seed_metrics
from prunedsl.search.fitness import BASE_STATISTICS, Fitness, FitnessSettings
from prunedsl.search.grammar import Grower, Vocabulary
from prunedsl.search.recipe import Recipe
from prunedsl.search.report import _spearman


def candidates(n: int, seed: int = 0) -> list:
    out = [parse(t) for _, t in seed_metrics() if not parse(t).requires - BASE_STATISTICS]
    rng = random.Random(seed)
    grower = Grower(rng, Vocabulary.from_available(BASE_STATISTICS))
    while len(out) < n:
        tree = grower.formula(rng.randint(1, 3))
        if tree is not None:
            out.append(parse(to_text(tree)))
    return out[:n]


def screen(fit: Fitness, metrics, recipe=None) -> tuple[list, float]:
    scores, t0 = [], time.perf_counter()
    for m in metrics:
        try:
            scores.append(fit.proxy(m, recipe))
        except Exception:  # non-finite formulas fail in the search too
            scores.append(None)
    return scores, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--sparsity", type=float, default=0.6)
    ap.add_argument("--candidates", type=int, default=40)
    ap.add_argument("--full", type=int, default=2, help="full evaluations to time")
    ap.add_argument("--exact", action="store_true", help="rank correlation with the exact proxy")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reconstruct-share", type=float, default=0.45, metavar="P",
                    help="share of +R candidates in the search's mix (0.45: 143 of 315 in "
                         "docs/search_run/2026-12-07_unstructured_60_mask_proxy)")
    ap.add_argument("--from-state", metavar="STATE_JSON", default=None,
                    help="screen the best-by-proxy candidates of a finished search instead "
                         "(e.g. docs/search_run/2026-11-30_evolve_300/state.json): fidelity where it matters, near the optimum")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    settings = FitnessSettings(args.model, sparsity=args.sparsity)
    t0 = time.perf_counter()
    fit = Fitness(settings, progress=False, log=log)
    setup = time.perf_counter() - t0
    if args.from_state:
        recs = json.loads(open(args.from_state, encoding="utf-8").read())["candidates"]
        recs = sorted((r for r in recs if r.get("twin_of") is None), key=lambda r: r["proxy"])
        metrics = [parse(r["text"]) for r in recs[: args.candidates]]
    else:
        metrics = candidates(args.candidates)
    fast, secs = screen(fit, metrics)
    rows = [["setup: load model + dense statistics/Grams", f"{fit.timings['load']:.1f} s + "
             f"{fit.timings['statistics']:.1f} s", f"{setup:.1f} s total"],
            ["proxy (8/30 blocks, 1/4 rows, rank 64)", f"{secs / len(metrics):.2f} s / candidate",
             f"**{60 * len(metrics) / secs:.0f} candidates/min** ({len(metrics)} candidates)"]]
    _, rsecs = screen(fit, metrics, Recipe(reconstruct=True, group="layer"))
    p = args.reconstruct_share
    mixed = 60 / ((1 - p) * secs / len(metrics) + p * rsecs / len(metrics))
    rows += [["proxy +R(layer): error after the OBS update (search/obs_proxy.py)",
              f"{rsecs / len(metrics):.2f} s / candidate", f"{60 * len(metrics) / rsecs:.0f} candidates/min"],
             [f"search mix: {p:.0%} +R", f"{60 / mixed:.2f} s / candidate",
              f"**{mixed:.0f} candidates/min** (from the two rows above)"]]
    to_time = [parse("wanda")] + metrics[0 if args.from_state else len(seed_metrics()):]
    for m in to_time[: args.full]:
        t = time.perf_counter()
        res = fit.full(m)
        rows.append([f"full evaluation: {m.pretty().replace('|', chr(92) + '|')}", f"{time.perf_counter() - t:.1f} s",
                     f"prune {res['prune_seconds']:.1f} s + val ppl {res['eval_seconds']:.1f} s "
                     f"({settings.val_windows}×{settings.seqlen}); ppl {res['val_ppl']:.2f}"])
    if args.exact:
        exact_settings = FitnessSettings(args.model, sparsity=args.sparsity, proxy_blocks=0,
                                         proxy_rows=1.0, proxy_rank=0)
        exact = Fitness(exact_settings, progress=False, log=log, loaded=fit.loaded)
        ref, esecs = screen(exact, metrics)
        pairs = [(a, b) for a, b in zip(fast, ref) if a is not None and b is not None]
        rho = _spearman([a for a, _ in pairs], [b for _, b in pairs])
        rows.append(["exact proxy (30/30 blocks, all rows, full XᵀX)", f"{esecs / len(metrics):.2f} s / candidate",
                     f"{60 * len(metrics) / esecs:.1f} candidates/min; Spearman vs default = {rho:.3f} "
                     f"({len(pairs)} finite)"])
    load = os.getloadavg()[0]
    print(f"bench_search: {args.model}, {args.sparsity:.0%} unstructured, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {load:.1f} at the end, "
          f"python {platform.python_version()}\n")
    print("| what | time | notes |\n|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
