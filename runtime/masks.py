"""Exact, deterministic selection of the weights to prune (docs/design.md §2).

Every group prunes exactly ``round(sparsity · size)`` entries (Python ``round``). Ties
(common: quantized checkpoints repeat weight values) are broken by position: among
equal scores the lower flat index is pruned first, the same order a stable ascending
sort gives. Selection uses ``kthvalue`` for the threshold (cheaper than sort or topk on
CPU) and only resolves ties among entries equal to the threshold.

Masks are bool tensors of the weight's shape; True means prune.
"""
from __future__ import annotations

import math

import torch

from ..errors import NonFiniteScoreError, PruneRuntimeError

GROUPS = ("row", "layer")


def _check_sparsity(sparsity: float) -> None:
    if not (0.0 <= sparsity <= 1.0) or math.isnan(sparsity):
        raise PruneRuntimeError(f"sparsity must be in [0, 1], got {sparsity}")


def _check_scores(scores: torch.Tensor) -> None:
    if torch.isnan(scores).any():  # NaN has no place in an order; ±inf is fine
        n = int(torch.isnan(scores).sum())
        raise NonFiniteScoreError(
            f"{n} of {scores.numel()} scores are NaN",
            hint="the metric divides 0 by 0 or takes log/sqrt of 0 or a negative; "
                 "add a small constant, e.g. log(x + 1e-8)")


def lowest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of exactly k lowest entries in each row of a 2-D tensor (ties: lower index first)."""
    rows, cols = scores.shape
    if k <= 0 or rows == 0:
        return torch.zeros(rows, cols, dtype=torch.bool, device=scores.device)
    if k >= cols:
        return torch.ones(rows, cols, dtype=torch.bool, device=scores.device)
    thr = scores.kthvalue(k, dim=1, keepdim=True).values  # (rows, 1) k-th smallest
    below = scores < thr                                   # all of these are pruned
    equal = scores == thr
    need = k - below.sum(1, keepdim=True)                  # ties each row still takes
    if bool((equal.sum(1, keepdim=True) == need).all()):
        return below | equal                               # no surplus ties (usual case)
    return below | (equal & (equal.cumsum(1) <= need))     # ties in index order


def prune_mask(scores: torch.Tensor, sparsity: float, *, group: str = "row",
               pattern: tuple[int, int] | None = None,
               shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Bool mask (True = prune) of the lowest-scoring weights.

    scores: (out, in) per weight; or (out, 1) / (1, in) per output row / input column
    (structured: whole rows / columns are pruned; ``shape`` = the weight's (out, in)
    is then required for the mask's shape). group: "row" (exact count per output row)
    or "layer" (exact count in the matrix). pattern (n, m): prune n of every m
    consecutive weights along the input dimension; ``sparsity`` is then n/m and unused.
    """
    if scores.dim() != 2:
        raise PruneRuntimeError(f"scores must be 2-D, got shape {tuple(scores.shape)}")
    _check_sparsity(sparsity)
    _check_scores(scores)
    out, inp = shape if shape is not None else tuple(scores.shape)
    if tuple(scores.shape) == (out, inp):
        if pattern is not None:
            return _nm_mask(scores, pattern)
        if group == "row":
            return lowest_k(scores, round(sparsity * inp))
        if group == "layer":
            flat = scores.reshape(1, -1)
            return lowest_k(flat, round(sparsity * flat.shape[1])).view(out, inp)
        raise PruneRuntimeError(f"unknown comparison group {group!r}; expected one of {GROUPS}")
    if pattern is not None:
        raise PruneRuntimeError(f"an N:M pattern needs per-weight scores ({out}, {inp}), "
                                f"got {tuple(scores.shape)}")
    if tuple(scores.shape) == (out, 1):      # Row scores: prune whole output channels
        rows = lowest_k(scores.reshape(1, -1), round(sparsity * out)).view(out, 1)
        return rows.expand(out, inp).contiguous()
    if tuple(scores.shape) == (1, inp):      # Col scores: prune whole input channels
        cols = lowest_k(scores, round(sparsity * inp))
        return cols.expand(out, inp).contiguous()
    raise PruneRuntimeError(
        f"scores of shape {tuple(scores.shape)} do not fit a weight of shape ({out}, {inp})",
        hint="a metric must give one score per weight (Mat), per row (Row) or per column (Col)")


def _nm_mask(scores: torch.Tensor, pattern: tuple[int, int]) -> torch.Tensor:
    n, m = pattern
    out, inp = scores.shape
    if not (0 <= n <= m) or m <= 0:
        raise PruneRuntimeError(f"N:M pattern needs 0 <= N <= M and M > 0, got {n}:{m}")
    if inp % m:
        raise PruneRuntimeError(f"N:M pattern {n}:{m} needs in_features divisible by {m}, "
                                f"got {inp}")
    groups = scores.reshape(out, inp // m, m)
    # stable sort inside each small group: equal scores prune the lower index first
    idx = groups.sort(dim=-1, stable=True).indices[..., :n]
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(-1, idx, True)
    return mask.view(out, inp)


def global_sparsities(scores_by_layer: dict[str, torch.Tensor], sparsity: float) -> dict[str, float]:
    """Per-layer pruned fractions from one threshold over all layers' scores.

    Exactly ``round(sparsity · total)`` entries are selected over all layers (ties: the
    earlier layer in dict order, then the lower flat index). Each fraction is count /
    numel, so ``round(fraction · numel)`` gives the count back exactly.
    """
    _check_sparsity(sparsity)
    flat = {name: s.reshape(-1).float() for name, s in scores_by_layer.items()}
    for name, s in flat.items():
        try:
            _check_scores(s)
        except NonFiniteScoreError as e:
            raise NonFiniteScoreError(f"layer {name}: {e.message}", hint=e.hint) from None
    total = sum(s.numel() for s in flat.values())
    k = round(sparsity * total)
    if k == 0 or total == 0:
        return {name: 0.0 for name in flat}
    thr = torch.cat(list(flat.values())).kthvalue(k).values
    counts = {name: int((s < thr).sum()) for name, s in flat.items()}
    need = k - sum(counts.values())  # ties at the threshold, taken in layer order
    for name, s in flat.items():
        take = min(need, int((s == thr).sum()))
        counts[name] += take
        need -= take
    return {name: counts[name] / flat[name].numel() for name in flat}
