"""The one per-layer statistics cache: what a compiled metric reads for one block linear.

Every pass over the blocks (pruning, dense scores, allocation statistics, the search's
proxy collection) builds a layer's statistics here, so they are the same tensors computed
by the same operations in the same order.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .stats import damped_inverse, gram, input_statistics, inverse_diag


class StatsCache:
    """X statistics per distinct input tensor within one block (identity, not value).

    Layers that share an input (q/k/v, gate/up) share one entry; the previous block's
    entries are dropped when the next block starts. ``with_gram`` keeps XᵀX as "gram";
    ``keep_inverse`` (with it) also keeps the float64 damped inverse behind "hinv" as
    "gram_inverse" (``stats.damped_inverse``'s pair), for the OBS factor to reuse.
    """

    def __init__(self, requires: frozenset[str], with_gram: bool = False, keep_inverse: bool = False):
        self.requires = requires
        self.with_gram = with_gram
        self.keep_inverse = keep_inverse and with_gram
        self.block = -1
        self.entries: list[tuple[torch.Tensor, dict[str, Any]]] = []

    def get(self, block: int, x: torch.Tensor) -> dict[str, Any]:
        if block != self.block:  # drop the previous block's inputs
            self.block, self.entries = block, []
        for seen, stats in self.entries:
            if seen is x:
                return stats
        flat = x.reshape(-1, x.shape[-1])  # (tokens, in)
        stats: dict[str, Any] = input_statistics(flat, self.requires - {"hinv"})
        if self.with_gram or "hinv" in self.requires:
            stats.update(gram_statistics(gram(flat), self.requires, self.with_gram, self.keep_inverse))
        self.entries.append((x, stats))  # holding x keeps its id from being reused
        return stats


def gram_statistics(g: torch.Tensor, requires: frozenset[str], with_gram: bool,
                    keep_inverse: bool = False) -> dict[str, Any]:
    """What a StatsCache entry holds from the Gram matrix g = XᵀX (in, in): "hinv" if
    required, "gram" if ``with_gram``, "gram_inverse" if also ``keep_inverse`` and hinv."""
    stats: dict[str, Any] = {}
    if "hinv" in requires:
        inverse = damped_inverse(g)
        stats["hinv"] = inverse_diag(inverse[0])
        if with_gram and keep_inverse:
            stats["gram_inverse"] = inverse
    if with_gram:
        stats["gram"] = g
    return stats


def layer_stats(name: str, layer: nn.Linear, x_stats: dict[str, torch.Tensor],
                grads: dict[str, torch.Tensor], weight: torch.Tensor | None = None) -> dict[str, Any]:
    """One layer's statistics: its input's (shared) plus W (float32), n_in, n_out and G.

    weight: the weight to score instead of the live one (e.g. a saved dense copy)."""
    w = layer.weight.detach() if weight is None else weight
    out, inp = w.shape
    stats: dict[str, Any] = {"W": w if w.dtype == torch.float32 else w.float(),
                             "n_in": float(inp), "n_out": float(out), **x_stats}
    if name in grads:
        stats["G"] = grads[name]
    return stats
