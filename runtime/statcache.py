"""The one per-layer statistics cache: what a compiled metric reads for one block linear.

Every pass over the blocks (pruning, dense scores, allocation statistics, the search's
proxy collection) builds a layer's statistics here, so they are the same tensors computed
by the same operations in the same order.

With micro-batched calibration (``run_blocks(calib_batch=B)``) a layer's input never
exists whole: the pass feeds each micro-batch to an ``InputAccumulator`` (one per
distinct input, from ``StatsCache.accumulator``) and hands the callback the accumulator
instead of the tensor; ``StatsCache.get`` finishes it into the same statistics. Sums
(Σx², Σ|x|, XᵀX) add up, max|x| is a max, mean and variance merge with Chan et al.'s
pairwise update; the per-chunk reductions are float32 as before, the running sums of the
(1, in) rows float64 and the Gram sum float32 (SparseGPT's H), then all float32.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import PruneRuntimeError
from .device import on_device_of
from .stats import INPUT_STATISTICS, damped_inverse, gram, input_statistics, inverse_diag


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
        if isinstance(x, InputAccumulator):
            stats = x.finish()
            self.entries.append((x, stats))
            return stats
        flat = x.reshape(-1, x.shape[-1])  # (tokens, in)
        stats: dict[str, Any] = input_statistics(flat, self.requires - {"hinv"})
        if self.with_gram or "hinv" in self.requires:
            stats.update(gram_statistics(gram(flat), self.requires, self.with_gram, self.keep_inverse))
        self.entries.append((x, stats))  # holding x keeps its id from being reused
        return stats

    def accumulator(self) -> "InputAccumulator":
        """An empty accumulator of what ``get`` would compute from a whole input."""
        return InputAccumulator(self.requires, self.with_gram, self.keep_inverse)


class InputAccumulator:
    """The statistics of one layer input, fed one micro-batch (…, in) at a time."""

    def __init__(self, requires: frozenset[str], with_gram: bool = False, keep_inverse: bool = False):
        self.need = set(requires) & INPUT_STATISTICS
        self.keep_inverse = keep_inverse
        self.with_gram = with_gram or "hinv" in self.need
        self.keep_gram = with_gram
        self.tokens = 0
        self.sums: dict[str, torch.Tensor] = {}   # float64 (1, in) running sums / max
        self.gram: torch.Tensor | None = None     # float32 (in, in)

    def add(self, x: torch.Tensor) -> None:
        flat = x.reshape(-1, x.shape[-1])  # (tokens, in)
        if flat.dtype != torch.float32:
            flat = flat.float()
        n = flat.shape[0]
        if n == 0:
            return
        part = input_statistics(flat, self.need & {"x_norm1", "x_norminf"})
        if "x_norm2" in self.need:
            part["sq"] = flat.square().sum(0, keepdim=True)
        if self.need & {"x_mean", "x_std", "x_var"}:
            var, mean = torch.var_mean(flat, dim=0, correction=0, keepdim=True)
            part["mean"], part["m2"] = mean, var * n
        self._merge({k: v.double() for k, v in part.items()}, n)
        if self.with_gram:
            g = gram(flat)
            self.gram = g if self.gram is None else self.gram.add_(g)
        self.tokens += n

    def _merge(self, part: dict[str, torch.Tensor], n: int) -> None:
        if not self.sums:
            self.sums = part
            return
        s, total = self.sums, self.tokens + n
        for k in ("sq", "x_norm1"):
            if k in part:
                s[k] += part[k]
        if "x_norminf" in part:
            s["x_norminf"] = torch.maximum(s["x_norminf"], part["x_norminf"])
        if "mean" in part:  # Chan, Golub & LeVeque's pairwise merge
            delta = part["mean"] - s["mean"]
            s["m2"] += part["m2"] + delta.square() * (self.tokens * n / total)
            s["mean"] += delta * (n / total)

    def finish(self) -> dict[str, torch.Tensor]:
        """The statistics ``StatsCache.get`` gives for the whole input (float32 (1, in))."""
        if self.tokens == 0:
            raise PruneRuntimeError("no calibration token reached this layer's input")
        s, out = self.sums, {}
        if "x_norm2" in self.need:
            out["x_norm2"] = s["sq"].sqrt().float()
        if "x_norm1" in self.need:
            out["x_norm1"] = s["x_norm1"].float()
        if "x_norminf" in self.need:
            out["x_norminf"] = s["x_norminf"].float()
        if "mean" in s:
            var = s["m2"] / self.tokens
            if "x_mean" in self.need:
                out["x_mean"] = s["mean"].float()
            if "x_var" in self.need:
                out["x_var"] = var.float()
            if "x_std" in self.need:
                out["x_std"] = var.sqrt().float()
        if self.gram is not None:
            out.update(gram_statistics(self.gram, frozenset(self.need), self.keep_gram, self.keep_inverse))
        return out


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
    if name in grads:  # G may live at home while an offloaded W is on the device
        stats["G"] = on_device_of(grads[name], w)
    return stats
