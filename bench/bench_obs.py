"""Benchmark the OBS sweep (runtime/obs.py) against a plain SparseGPT written here.

Run: python bench/bench_obs.py [--threads 1] [--repeats 3] [--pattern 2:4]

For each SmolLM2-135M layer shape (out × in: q/o 576×576, k/v 192×576, gate/up 1536×576,
down 576×1536), on random weights and the Gram matrix of random correlated inputs, it
times at 50% sparsity (or an N:M pattern) with one threshold per block:
  plain      SparseGPT as the paper describes it, float32: Cholesky factor of H⁻¹, blocks
             of 128 columns, per column the OBS step as a rank-1 update inside the block,
             one matmul for the lazy update of the columns right of the block;
  prunedsl   obs.inverse_cholesky + obs.reconstruct with the compiled `sparsegpt` metric
             re-scored on the whole current weight at each block (group) start;
  columnwise the same, scoring only the block being decided (metric_select(columnwise=True)).
Prints a Markdown table of median seconds per layer (factorisation included), and the
largest weight difference of prunedsl vs plain (float64 vs float32 factor; masks may
differ at near-ties). ``--threads`` sets torch's threads for plain and the factorisation;
obs.reconstruct runs its sweep on one thread whatever the setting (see obs._one_thread).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import prunedsl
from prunedsl.runtime.obs import inverse_cholesky, metric_select, reconstruct

SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536)]
BLOCK = 128
DAMP = 0.01


def plain_sparsegpt(w: torch.Tensor, h: torch.Tensor, sparsity: float,
                    pattern: tuple[int, int] | None = None) -> torch.Tensor:
    """SparseGPT (Frantar & Alistarh 2023, Algorithm 1) in float32; returns the pruned weight."""
    w = w.clone().float()
    h = h.clone().float()
    out, n = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += DAMP * torch.mean(torch.diag(h)) * torch.eye(n)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    for i1 in range(0, n, BLOCK):
        i2 = min(i1 + BLOCK, n)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        d = torch.diag(hinv1)
        mask1 = torch.zeros_like(w1, dtype=torch.bool)
        if pattern is None:   # saliency w²/[H⁻¹]_jj², one threshold over the block
            sal = w1 ** 2 / d.unsqueeze(0) ** 2
            k = int(sal.numel() * sparsity)
            mask1.view(-1)[torch.argsort(sal.flatten())[:k]] = True
        for i in range(i2 - i1):
            if pattern is not None and i % pattern[1] == 0:
                sal = w1[:, i:i + pattern[1]] ** 2 / d[i:i + pattern[1]].unsqueeze(0) ** 2
                idx = torch.topk(sal, pattern[0], dim=1, largest=False).indices
                mask1[:, i:i + pattern[1]].scatter_(1, idx, True)
            q = w1[:, i].clone()
            q[mask1[:, i]] = 0
            e = (w1[:, i] - q) / d[i]
            w1[:, i:] -= e.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            w1[:, i] = q
            err1[:, i] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w


def data(out: int, n: int, tokens: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(out, n, generator=g) * 0.02
    x = torch.randn(tokens, n, generator=g) * torch.exp(torch.randn(n, generator=g))
    x = x + 0.5 * torch.randn(tokens, 1, generator=g)          # correlated channels
    return w, x.T @ x


def median_s(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--pattern", default=None, help="N:M, e.g. 2:4 (default: unstructured)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pattern = tuple(int(v) for v in args.pattern.split(":")) if args.pattern else None
    sparsity = pattern[0] / pattern[1] if pattern else args.sparsity
    f = prunedsl.parse("sparsegpt").compile()

    def score(w: torch.Tensor, hinv: torch.Tensor) -> torch.Tensor:
        return f({"W": w, "hinv": hinv})

    def ours(w: torch.Tensor, h: torch.Tensor, columnwise: bool) -> torch.Tensor:
        sel = metric_select(score, sparsity, group="layer", pattern=pattern, columnwise=columnwise)
        return reconstruct(w, None, sel, chol=inverse_cholesky(h),
                           group_cols=pattern[1] if pattern else None)[0]

    print(f"threads {args.threads}, repeats {args.repeats}, "
          f"{args.pattern or f'{sparsity:.0%} unstructured'}\n")
    print("| shape (out×in) | plain s | prunedsl s | columnwise s | prunedsl/plain | max |Δw| |")
    print("|---|---|---|---|---|---|")
    for out, n in SHAPES:
        w, h = data(out, n)
        t_plain = median_s(lambda: plain_sparsegpt(w, h, sparsity, pattern), args.repeats)
        t_ours = median_s(lambda: ours(w, h, False), args.repeats)
        t_col = median_s(lambda: ours(w, h, True), args.repeats)
        diff = (ours(w, h, True) - plain_sparsegpt(w, h, sparsity, pattern)).abs().max().item()
        print(f"| {out}×{n} | {t_plain:.3f} | {t_ours:.3f} | {t_col:.3f} | "
              f"{t_ours / t_plain:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
