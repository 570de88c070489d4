"""How well a fitness ranks like the truth: rank correlations and a bootstrap band.

Plain Python (no torch, no scipy), small inputs (a panel of tens of candidates, tens of
windows). Ties are handled as scipy does: Spearman is Pearson's r of average ranks;
Kendall is tau-b, (concordant − discordant) / √((n0 − ties_x)(n0 − ties_y)).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

from ..errors import PruneRuntimeError


def _check_pair(x: Sequence[float], y: Sequence[float]) -> None:
    if len(x) != len(y):
        raise PruneRuntimeError(f"rank correlation of sequences of different lengths ({len(x)}, {len(y)})")
    if any(not math.isfinite(v) for v in (*x, *y)):
        raise PruneRuntimeError("rank correlation of non-finite values")


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho with average ranks for ties; NaN when either side is constant or n < 2."""
    _check_pair(x, y)
    if len(x) < 2:
        return math.nan
    return _pearson(average_ranks(x), average_ranks(y))


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b; NaN when either side is constant or n < 2. O(n²): fine for panels."""
    _check_pair(x, y)
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0:
                ties_x += 1
            if dy == 0:
                ties_y += 1
            if dx == 0 or dy == 0:
                continue
            if (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    n0 = n * (n - 1) // 2
    denom = math.sqrt((n0 - ties_x) * (n0 - ties_y))
    return (concordant - discordant) / denom if denom > 0 else math.nan


@dataclass(frozen=True)
class Band:
    """A perplexity and its bootstrap percentile band."""
    ppl: float
    low: float
    high: float
    level: float
    resamples: int

    @property
    def relative_halfwidth(self) -> float:
        """(high − low) / 2 / ppl: the ± noise, as a fraction of the perplexity."""
        return (self.high - self.low) / 2 / self.ppl


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of sorted values, q in [0, 1]."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bootstrap_ppl(window_nll_sums: Sequence[float], tokens_per_window: int, *, resamples: int = 1000,
                  level: float = 0.95, seed: int = 0) -> Band:
    """Percentile band of ppl = exp(Σ NLL / tokens) when the windows are resampled with
    replacement (equal-length windows, so each resample has the same token count)."""
    n = len(window_nll_sums)
    if n == 0 or tokens_per_window < 1:
        raise PruneRuntimeError("a bootstrap needs at least one window of at least one token")
    if not 0 < level < 1:
        raise PruneRuntimeError(f"level must be in (0, 1), got {level}")
    rng = random.Random(seed)
    total = n * tokens_per_window

    def ppl(sums: Sequence[float]) -> float:
        mean = math.fsum(sums) / total
        return math.exp(mean) if mean < 700 else math.inf

    draws = sorted(ppl([window_nll_sums[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    alpha = (1 - level) / 2
    return Band(ppl=ppl(window_nll_sums), low=_percentile(draws, alpha), high=_percentile(draws, 1 - alpha),
                level=level, resamples=resamples)


def bootstrap_ppl_ratio(window_nll_sums: Sequence[float], reference_sums: Sequence[float],
                        tokens_per_window: int, *, resamples: int = 1000, level: float = 0.95,
                        seed: int = 0) -> Band:
    """Paired band of ppl / ppl_reference on the same windows: both are resampled with the
    same window indices, so the noise the two share (hard windows) cancels. ``Band.ppl``
    is the ratio; a band that excludes 1 says the difference is more than window noise."""
    n = len(window_nll_sums)
    if n != len(reference_sums):
        raise PruneRuntimeError(f"paired bootstrap of {n} and {len(reference_sums)} windows")
    diffs = [a - b for a, b in zip(window_nll_sums, reference_sums)]
    # exp(Σ (a−b) / tokens) = ppl_a / ppl_b: the ratio is a "perplexity" of the differences
    return bootstrap_ppl(diffs, tokens_per_window, resamples=resamples, level=level, seed=seed)
