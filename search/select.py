"""Fast exact pruning masks for the proxy: ``select_mask`` = ``runtime.masks.prune_mask``.

The proxy masks every screened layer of every candidate, so selection dominates its
cost. ``numpy.partition`` finds the k-th smallest score per row about 3.5× faster
than ``torch.kthvalue`` on CPU (1536×576 float32, one thread: 5.5 ms vs 19 ms), so
Mat scores under the ``row`` and ``layer`` groups take the threshold from numpy and
resolve ties exactly as ``runtime.masks.lowest_k`` does (lower flat index first).
Everything else (N:M, structured Row/Col scores) goes to ``prune_mask`` itself.
``tests/test_search_fitness.py`` checks the two agree, ties and zeros included.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import NonFiniteScoreError, PruneRuntimeError
from ..runtime.masks import prune_mask


def _lowest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of exactly k lowest entries per row of a 2-D float tensor (ties: lower index)."""
    rows, cols = scores.shape
    if k <= 0 or rows == 0:
        return torch.zeros(rows, cols, dtype=torch.bool)
    if k >= cols:
        return torch.ones(rows, cols, dtype=torch.bool)
    a = scores.detach().cpu().contiguous().numpy()
    thr = torch.from_numpy(np.partition(a, k - 1, axis=1)[:, k - 1: k].copy())  # (rows, 1)
    s = scores.cpu()
    below = s < thr
    equal = s == thr
    need = k - below.sum(1, keepdim=True)
    if bool((equal.sum(1, keepdim=True) == need).all()):
        return below | equal
    return below | (equal & (equal.cumsum(1) <= need))


def select_mask(scores: torch.Tensor, sparsity: float, *, group: str = "row",
                pattern: tuple[int, int] | None = None,
                shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Bool mask (True = prune), identical to ``prune_mask`` with the same arguments."""
    out_in = shape if shape is not None else tuple(scores.shape)
    if (pattern is not None or scores.dim() != 2 or tuple(scores.shape) != tuple(out_in)
            or group not in ("row", "layer") or scores.dtype != torch.float32):
        return prune_mask(scores, sparsity, group=group, pattern=pattern, shape=shape)
    if not 0.0 <= sparsity <= 1.0:  # also rejects NaN
        raise PruneRuntimeError(f"sparsity must be in [0, 1], got {sparsity}")
    if torch.isnan(scores).any():  # the same message prune_mask gives
        n = int(torch.isnan(scores).sum())
        raise NonFiniteScoreError(f"{n} of {scores.numel()} scores are NaN")
    out, inp = out_in
    if group == "row":
        return _lowest_k(scores, round(sparsity * inp))
    flat = scores.reshape(1, -1)
    return _lowest_k(flat, round(sparsity * flat.shape[1])).view(out, inp)
