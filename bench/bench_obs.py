"""Benchmark prunedsl's OBS reconstruction (runtime/obs.py) against a plain SparseGPT written here.

Run: python bench/bench_obs.py [--threads 2,1] [--repeats 5] [--tokens 4096] [--sparsity 0.5]

For each SmolLM2-135M block linear shape (out × in: q/o 576×576, k/v 192×576, gate/up
1536×576, down 576×1536), on random weights and the Gram matrix XᵀX of random correlated
inputs (``--tokens`` rows), it times one layer at 50% unstructured sparsity:
  plain     SparseGPT as the paper (Frantar & Alistarh 2023, Algorithm 1) states it, all in
            float32: the upper Cholesky factor of the damped H⁻¹, 128-column blocks, the mask
            of a block chosen at its start from w²/[H⁻¹]_jj² with one threshold over the whole
            block, per column the OBS step as a rank-1 update inside the block, and one
            matmul (the lazy batch update) for the columns right of the block;
  prunedsl  what ``runtime/prune.py`` runs for a layer with ``--reconstruct`` and the
            ``sparsegpt`` metric (group "layer"): ``statcache.gram_statistics`` (the
            metric's hinv, float64), the metric's first scores, ``prune.obs_factor`` (the
            OBS factor, float64) and ``prune._reconstruct_layer``, which re-scores the
            compiled metric on the whole current weight at each 128-column block.
Both include their factorisations; the Gram matrix itself (capture) is not timed. Each
repetition runs plain then prunedsl (interleaved), after one warm-up of each; the table
gives the median seconds per layer, their ratio, how many mask entries differ and the
largest weight difference (plain factors H in float32, prunedsl in float64, so near-tie
saliencies can flip and the flipped weights then differ by their own size).
``--threads`` is a list: the table is repeated for each torch intra-op thread count
(``obs.reconstruct`` runs its column sweep on one thread whatever the setting).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch
from torch import nn

import prunedsl
from prunedsl.runtime.prune import _reconstruct_layer, _score, obs_factor
from prunedsl.runtime.statcache import gram_statistics, layer_stats

SHAPES = [("q/o", 576, 576), ("k/v", 192, 576), ("gate/up", 1536, 576), ("down", 576, 1536)]
BLOCKSIZE = 128
PERCDAMP = 0.01


@torch.no_grad()
def plain_sparsegpt(w: torch.Tensor, h: torch.Tensor, sparsity: float,
                    blocksize: int = BLOCKSIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT, unstructured, float32; returns (pruned weight (out, in), mask (out, in) bool).

    Each block prunes the round(s·out·end) − round(s·out·start) lowest saliencies (ties:
    lower flat index first), so the layer ends with exactly round(s·out·in) zeros.
    """
    w = w.to(torch.float32, copy=True)                  # (out, in)
    h = h.to(torch.float32, copy=True)                  # (in, in)
    out, n = w.shape
    dead = torch.diagonal(h) == 0                       # inputs that were always 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += PERCDAMP * torch.mean(torch.diagonal(h)) * torch.eye(n)
    # Row j of the upper Cholesky factor of H⁻¹ is the OBS direction for column j once
    # columns < j are fixed; its diagonal entry is sqrt([H_{j:,j:}⁻¹]_00).
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    mask = torch.zeros(out, n, dtype=torch.bool)
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        w1 = w[:, i1:i2].clone()                        # (out, B)
        err = torch.zeros_like(w1)                      # (out, B)
        h1 = hinv[i1:i2, i1:i2]                         # (B, B)
        d = torch.diagonal(h1)                          # (B,)
        saliency = (w1 ** 2 / d.unsqueeze(0) ** 2).flatten()
        k = round(sparsity * out * i2) - round(sparsity * out * i1)
        m1 = torch.zeros(saliency.numel(), dtype=torch.bool)
        m1[torch.sort(saliency, stable=True).indices[:k]] = True
        m1 = m1.view(out, i2 - i1)                      # (out, B)
        for j in range(i2 - i1):
            col = w1[:, j]
            q = col.masked_fill(m1[:, j], 0.0)
            e = (col - q) / d[j]
            w1[:, j:] -= e.unsqueeze(1) * h1[j, j:].unsqueeze(0)
            w1[:, j] = q
            err[:, j] = e
        w[:, i1:i2] = w1
        mask[:, i1:i2] = m1
        w[:, i2:] -= err @ hinv[i1:i2, i2:]             # lazy batch update
    return w, mask


def sparsegpt_scorer() -> Callable:
    """The library `sparsegpt` metric compiled, called the way the CLI calls a scorer."""
    metric = prunedsl.parse("sparsegpt").compile()
    scorer = lambda name, stats: metric(stats, layer=name)  # noqa: E731
    scorer.requires = metric.requires
    return scorer


@torch.no_grad()
def prunedsl_sparsegpt(w: torch.Tensor, h: torch.Tensor, sparsity: float,
                       scorer: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer through prune.py's --reconstruct path (group "layer"); (weight, mask)."""
    scorer = scorer or sparsegpt_scorer()
    out, n = w.shape
    layer = nn.Linear(n, out, bias=False)
    layer.weight.copy_(w)
    name = "bench.layer"
    x_stats = gram_statistics(h, scorer.requires, with_gram=True, keep_inverse=True)  # as StatsCache
    stats = layer_stats(name, layer, x_stats, {})
    scores = _score(scorer, name, stats)
    mask = _reconstruct_layer(scorer, name, layer, stats, scores, obs_factor(x_stats), sparsity,
                              "layer", None)
    return layer.weight.detach(), mask


def random_layer(out: int, n: int, tokens: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random weight (out, in) and the Gram XᵀX (in, in) of inputs with uneven, correlated channels."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, n, generator=g) * 0.02
    x = torch.randn(tokens, n, generator=g) * torch.exp(torch.randn(n, generator=g))
    x = x + 0.5 * torch.randn(tokens, 1, generator=g)
    return w, x.T @ x


def _seconds(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run_table(threads: int, repeats: int, tokens: int, sparsity: float) -> None:
    torch.set_num_threads(threads)
    scorer = sparsegpt_scorer()
    print(f"\n### torch threads {torch.get_num_threads()} "
          f"(load average 1/5/15 min at start: {_loadavg()})\n")
    print("| layer | shape (out×in) | plain s | prunedsl s | prunedsl/plain | masks differ | max |Δw| |")
    print("|---|---|---|---|---|---|---|")
    for label, out, n in SHAPES:
        w, h = random_layer(out, n, tokens)
        plain = lambda: plain_sparsegpt(w, h, sparsity)          # noqa: E731
        ours = lambda: prunedsl_sparsegpt(w, h, sparsity, scorer)  # noqa: E731
        (w_plain, m_plain), (w_ours, m_ours) = plain(), ours()    # warm-up, and the comparison
        times_plain, times_ours = [], []
        for _ in range(repeats):
            times_plain.append(_seconds(plain))
            times_ours.append(_seconds(ours))
        t_plain, t_ours = statistics.median(times_plain), statistics.median(times_ours)
        differ = int((m_plain != m_ours).sum())
        dw = (w_plain - w_ours).abs().max().item()
        print(f"| {label} | {out}×{n} | {t_plain:.3f} | {t_ours:.3f} | {t_ours / t_plain:.2f} | "
              f"{differ} of {m_plain.numel()} | {dw:.1e} |", flush=True)
    print(f"\nload average at end: {_loadavg()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="2,1", help="comma-separated torch thread counts, one table each")
    ap.add_argument("--repeats", type=int, default=5, help="timed repetitions (median), after one warm-up")
    ap.add_argument("--tokens", type=int, default=4096, help="calibration tokens behind the Gram matrix")
    ap.add_argument("--sparsity", type=float, default=0.5)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, repeats {args.repeats}, "
          f"{args.tokens} tokens, {args.sparsity:.0%} unstructured, blocks of {BLOCKSIZE}")
    for threads in (int(t) for t in args.threads.split(",")):
        run_table(threads, args.repeats, args.tokens, args.sparsity)


if __name__ == "__main__":
    main()
