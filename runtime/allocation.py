"""Per-block sparsity from an allocation rule (docs/design.md §3): block statistics, the mapping,
and per-layer sparsities that prune_model takes as ``layer_sparsity=``.

1. Block statistics, only those the rule names: ``depth`` and ``params`` are read off the
   model; ``alpha_hill`` from the weights alone (an SVD per linear, no forward pass);
   score statistics (``outlier_ratio``, ``skew``, ``kurtosis``) from ONE pass of the dense
   model over the calibration batch (``run_blocks``, nothing pruned), as OWL does: the
   mapping normalizes over all blocks, so every block's statistic is needed before any
   block is pruned. ``uniform`` needs nothing.
2. The mapping (``spread_sparsities``): importance → linear into [S − λ, S + λ] (higher
   importance, lower sparsity) → shifted so that the parameter-weighted mean is S →
   clamped to [0, 0.99], the shift re-solved by bisection after clamping, so the mean
   still holds (to ~1e-15).
3. Per-layer counts (``apportion``): masks prune whole steps (one weight per row for
   group=row), so each layer's fraction is rounded to its step with a largest-remainder
   rule that keeps the total pruned count at round(S · total) (within half a step).

With an N:M pattern the same rule gives each block its own N of N:M (OWL's mixed N:M):
block Ns are apportioned so that the mean stays N/M, and ``mixed_nm_scorer`` turns each
layer's scores into its N:M mask (-inf pruned, +inf kept) so that prune_model's per-row
selection at sparsity N_b/M picks exactly that mask.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import PruneRuntimeError
from .capture import run_blocks
from .masks import prune_mask
from .models import find_blocks, linear_layers
from .statcache import StatsCache, layer_stats  # the very statistics the pruning pass uses

MAX_SPARSITY = 0.99
EIG_FLOOR = 1e-5  # eigenvalues at or below this are numerical zeros (AlphaPruning's EVALS_THRESH)
Scorer = Callable[[str, dict[str, Any]], torch.Tensor]


# --- the mapping ---------------------------------------------------------------------------
def spread_sparsities(importance: Sequence[float], weights: Sequence[float], target: float,
                      lam: float, hi: float = MAX_SPARSITY) -> list[float]:
    """Per-block sparsity: linear in importance within [S − λ, S + λ], weighted mean S, in [0, hi]."""
    n = len(importance)
    if n == 0 or len(weights) != n:
        raise PruneRuntimeError(f"need one weight per block, got {len(weights)} for {n} blocks")
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise PruneRuntimeError("block weights (parameter counts) must be positive")
    if not 0.0 <= target <= hi:
        raise PruneRuntimeError(f"an allocation needs a target sparsity in [0, {hi}], got {target}",
                                hint=f"blocks are clamped to [0, {hi}], so the mean cannot exceed {hi}")
    bad = [b for b, v in enumerate(importance) if not math.isfinite(v)]
    if bad:
        raise PruneRuntimeError(f"the rule's importance is not finite in block(s) {bad[:8]}",
                                hint="the formula divides by 0 or takes log of 0 there; add a small "
                                     "constant, e.g. log(x + 1e-6)")
    lo_i, hi_i = min(importance), max(importance)
    if lam == 0 or hi_i - lo_i <= 1e-12 * max(1.0, abs(lo_i), abs(hi_i)):
        return [float(target)] * n  # constant importance: uniform, exactly
    base = [target + lam - 2 * lam * (v - lo_i) / (hi_i - lo_i) for v in importance]
    return _shift_to_mean(base, weights, target, hi)


def _shift_to_mean(base: Sequence[float], weights: Sequence[float], target: float, hi: float) -> list[float]:
    """clamp(base + c, 0, hi) with c solved by bisection: Σ w·s / Σ w = target."""
    total = math.fsum(weights)

    def mean(c: float) -> float:
        return math.fsum(w * min(hi, max(0.0, b + c)) for b, w in zip(base, weights)) / total

    lo_c, hi_c = -max(base), hi - min(base)  # mean(lo_c) = 0 ≤ target ≤ hi = mean(hi_c)
    for _ in range(200):  # the mean is continuous and nondecreasing in c
        mid = 0.5 * (lo_c + hi_c)
        if mean(mid) < target:
            lo_c = mid
        else:
            hi_c = mid
        if hi_c - lo_c <= 1e-15:
            break
    c = 0.5 * (lo_c + hi_c)
    return [min(hi, max(0.0, b + c)) for b in base]


def apportion(ideal: Sequence[float], units: Sequence[float], caps: Sequence[int], target: float) -> list[int]:
    """Integer steps k_i ≈ ideal_i (0 ≤ k_i ≤ cap_i) with Σ units_i·k_i as close to ``target``
    as the step sizes allow: floors, then one step more (or less) for the largest
    (smallest) remainders while that brings the total closer."""
    k = [max(0, min(cap, math.floor(x))) for x, cap in zip(ideal, caps)]
    deficit = target - math.fsum(u * s for u, s in zip(units, k))
    if deficit > 0:
        for i in sorted(range(len(k)), key=lambda i: (k[i] - ideal[i], i)):
            if deficit <= 0:
                break
            if k[i] < caps[i] and units[i] <= 2 * deficit:
                k[i] += 1
                deficit -= units[i]
    elif deficit < 0:
        for i in sorted(range(len(k)), key=lambda i: (ideal[i] - k[i], i)):
            if deficit >= 0:
                break
            if k[i] > 0 and units[i] <= -2 * deficit:
                k[i] -= 1
                deficit += units[i]
    return k


def _steps(out: int, inp: int, group: str, metric_shape: str) -> tuple[int, int]:
    """(steps, weights per step) of one layer's mask at the given group / score shape."""
    if metric_shape == "Row":
        return out, inp
    if metric_shape == "Col" or group == "row":
        return inp, out
    return out * inp, 1  # group=layer


def layer_sparsities(block_sparsity: Sequence[float], blocks: Sequence[dict[str, tuple[int, int]]],
                     target: float, *, group: str = "row", metric_shape: str = "Mat") -> dict[str, float]:
    """Per-layer fractions whose masks prune round(target · total) weights in all (to half a step).

    blocks: per block, {layer name: (out, in)}."""
    names, ideal, units, caps, steps = [], [], [], [], []
    for s, layers in zip(block_sparsity, blocks):
        for name, (out, inp) in layers.items():
            n, u = _steps(out, inp, group, metric_shape)
            names.append(name)
            ideal.append(s * n)
            units.append(u)
            caps.append(math.floor(MAX_SPARSITY * n + 1e-9))
            steps.append(n)
    total = sum(out * inp for layers in blocks for out, inp in layers.values())
    k = apportion(ideal, units, caps, round(target * total))
    return {name: ki / n for name, ki, n in zip(names, k, steps)}


# --- block statistics ----------------------------------------------------------------------
def hill_alpha(weight: torch.Tensor) -> float:
    """Hill estimate of the power-law tail exponent of eig(WᵀW), AlphaPruning's 'xmin_mid'
    (not its LLM default 'xmin_peak'): of the N eigenvalues above EIG_FLOOR, ascending, the
    tail is the top half from index N // 2 (n of them, λ_xmin the smallest) and
    α = 1 + n / Σ_{tail} log(λ / λ_xmin); ∞ when the tail is flat."""
    w = weight.detach().double()  # (out, in)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # the smaller Gram: same nonzero eigs
    eigs = torch.linalg.eigvalsh(gram).clamp_min(0)  # ascending, (min(out, in),); faster than an SVD
    nz = eigs[eigs > EIG_FLOOR]
    if nz.numel() < 2:
        nz = eigs
    logs = nz[nz.numel() // 2:].double().clamp_min(1e-300).log()
    denom = float(logs.sum() - logs.numel() * logs[0])
    return 1.0 + logs.numel() / denom if denom > 0 else math.inf


def score_statistics(chunks: Sequence[torch.Tensor], keys: Sequence[str]) -> dict[str, float]:
    """Statistics of the concatenation of ``chunks`` (one block's scores), in float64,
    without concatenating: mean, then central moments and outlier counts per chunk."""
    n = sum(c.numel() for c in chunks)
    mean = math.fsum(float(c.double().sum()) for c in chunks) / n
    out: dict[str, float] = {}
    if any(k in ("skew", "kurtosis") for k in keys):
        m2 = m3 = m4 = 0.0
        for c in chunks:
            d = c.reshape(-1).double() - mean
            d2 = d * d
            m2, m3, m4 = m2 + float(d2.sum()), m3 + float((d2 * d).sum()), m4 + float((d2 * d2).sum())
        m2, m3, m4 = m2 / n, m3 / n, m4 / n
        out["skew"] = m3 / m2 ** 1.5 if m2 > 0 else 0.0
        out["kurtosis"] = m4 / m2 ** 2 - 3.0 if m2 > 0 else 0.0  # excess kurtosis
    for key in keys:
        if key.startswith("outlier_ratio:"):
            m = float(key.split(":", 1)[1])
            out[key] = sum(int((c > m * mean).sum()) for c in chunks) / n
    return {k: out[k] for k in keys}


def dense_score_statistics(model: nn.Module, calib_ids: torch.Tensor, scorer: Scorer,
                           metric_requires: frozenset[str], keys: Sequence[str], *,
                           progress: bool = True,
                           gradients: dict[str, torch.Tensor] | None = None,
                           placement=None, calib_batch: int | None = None) -> list[dict[str, float]]:
    """One pass of the dense model: per block, statistics of the metric's scores over all
    of the block's linears. Scores are kept for one block at a time.

    gradients: a ``gradient_norms`` result of this dense model for ``G`` (computed here if
    the metric needs it and none is given)."""
    from . import gradients as gradients_module
    grads = gradients if gradients is not None else \
        gradients_module.gradient_norms(model, calib_ids, progress=progress,
                                        placement=placement) if "G" in metric_requires else {}
    cache = StatsCache(frozenset(metric_requires))
    per_block: dict[int, dict[str, float]] = {}
    current: dict[str, Any] = {"block": -1, "chunks": []}

    def finish() -> None:
        if current["chunks"]:
            per_block[current["block"]] = score_statistics(current["chunks"], keys)
        current["chunks"] = []

    def on_linear(i: int, name: str, layer: nn.Linear, x: torch.Tensor) -> None:
        if i != current["block"]:
            finish()
            current["block"] = i
        scores = scorer(name, layer_stats(name, layer, cache.get(i, x), grads))
        current["chunks"].append(scores.detach())  # nothing is pruned in this pass

    run_blocks(model, calib_ids, on_linear, progress=progress, desc="allocation statistics",
               placement=placement, calib_batch=calib_batch, stats=cache)
    finish()
    blocks, _ = find_blocks(model)
    missing = [b for b in range(len(blocks)) if b not in per_block]
    if missing:
        raise PruneRuntimeError(f"blocks {missing[:8]} ran no linear layer in the statistics pass")
    return [per_block[b] for b in range(len(blocks))]


# --- the plan --------------------------------------------------------------------------------
@dataclass
class AllocationPlan:
    rule: str                              # resolved rule text
    name: str | None
    target: float
    block_sparsity: list[float]            # the mapping's output (weighted mean = target)
    layer_sparsity: dict[str, float]       # what prune_model gets (rounded to mask steps)
    block_stats: dict[str, list[float]]    # {statistic key: value per block}
    importance: list[float]
    block_params: list[int]
    statistics_pass: str                   # "none", "weights only", "dense forward"
    seconds: dict[str, float] = field(default_factory=dict)
    block_pattern: list[str] | None = None  # mixed N:M, e.g. ["3:8", "5:8", ...]
    layer_pattern: dict[str, tuple[int, int]] | None = None
    # G of the dense model when the statistics pass computed it: the pruning pass reuses it
    # (prune_model(gradients=...)) instead of a second backward over the calibration data
    gradients: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    layer_block: dict[str, int] = field(default_factory=dict, repr=False)  # layer name → block

    def realized_block_sparsity(self, layers: Sequence[Any]) -> list[float | None]:
        """Per block, the fraction of its weights the pruning pass actually zeroed
        (parameter-weighted over the block's layers), from prune_model's per-layer results
        (``LayerResult`` or their dicts); None for a block none of whose layers ran.
        ``block_sparsity`` is the mapping's output before rounding to mask steps."""
        pruned = [0] * len(self.block_sparsity)
        total = [0] * len(self.block_sparsity)
        for layer in layers:
            d = layer if isinstance(layer, dict) else vars(layer)
            b = self.layer_block.get(d["name"])
            if b is not None:
                pruned[b] += d["pruned"]
                total[b] += d["total"]
        return [p / t if t else None for p, t in zip(pruned, total)]

    @property
    def mean_sparsity(self) -> float:
        return math.fsum(s * p for s, p in zip(self.block_sparsity, self.block_params)) / sum(self.block_params)

    def wrap(self, scorer: Scorer) -> Scorer:
        return mixed_nm_scorer(scorer, self.layer_pattern) if self.layer_pattern else scorer

    def to_dict(self, layers: Sequence[Any] | None = None) -> dict[str, Any]:
        """The record; with prune_model's per-layer results (``report.layers``) it also has
        ``realized_block_sparsity``, what was pruned per block (after rounding to mask steps)."""
        # not asdict(self): it would deep-copy the gradient tensors only to drop them
        skip = ("layer_sparsity", "layer_pattern", "gradients", "layer_block")  # pruning.json lists every layer
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in skip}
        if layers is not None:
            d["realized_block_sparsity"] = self.realized_block_sparsity(layers)
        d["mean_sparsity"] = self.mean_sparsity
        d["allocation_seconds"] = sum(self.seconds.values())
        return d


def mixed_nm_scorer(scorer: Scorer, patterns: dict[str, tuple[int, int]]) -> Scorer:
    """Scores whose lowest N/M per row are exactly the layer's own N:M mask."""
    def wrapped(name: str, stats: dict[str, Any]) -> torch.Tensor:
        scores = scorer(name, stats)  # (out, in)
        try:
            mask = prune_mask(scores, 0.0, pattern=patterns[name])
        except PruneRuntimeError as e:
            raise type(e)(f"layer {name}: {e.message}", hint=e.hint) from None
        return torch.full(scores.shape, math.inf, dtype=scores.dtype,
                          device=scores.device).masked_fill_(mask, -math.inf)
    return wrapped


def plan_allocation(alloc, model: nn.Module, calib_ids: torch.Tensor | None, scorer: Scorer | None,
                    metric_requires: frozenset[str], *, sparsity: float, group: str = "row",
                    pattern: tuple[int, int] | None = None, metric_shape: str = "Mat",
                    progress: bool = True, block_stats: dict[str, list[float]] | None = None,
                    gradients: dict[str, torch.Tensor] | None = None,
                    placement=None, calib_batch: int | None = None) -> AllocationPlan:
    """Block statistics (only those ``alloc.requires``), mapping and per-layer sparsities.

    block_stats: statistics computed before for this model and metric (they do not depend
    on the sparsity); keys present there are not computed again. gradients: G of this dense
    model computed before (else computed here when the score statistics need it)."""
    if group == "global":
        raise PruneRuntimeError("--allocation sets per-block sparsity; --group global sets per-layer "
                                "sparsity from one threshold; use one or the other",
                                hint="use --group row (default) or layer with --allocation")
    if pattern is not None:
        sparsity = pattern[0] / pattern[1]  # N:M fixes the mean; the rule mixes N per block
    t_start = time.perf_counter()
    blocks, prefix = find_blocks(model)
    shapes = [{f"{prefix}.{i}.{n}": tuple(m.weight.shape) for n, m in linear_layers(b).items()}
              for i, b in enumerate(blocks)]  # per block {full name: (out, in)}, as prune_model names them
    params = [sum(o * i for o, i in layers.values()) for layers in shapes]
    nb = len(blocks)
    req = alloc.requires
    values = {k: v for k, v in (block_stats or {}).items() if k in req}
    seconds: dict[str, float] = {}
    grads: dict[str, torch.Tensor] | None = None
    req = req - set(values)
    if "depth" in req:
        values["depth"] = [b / nb for b in range(nb)]
    if "params" in req:
        values["params"] = [float(p) for p in params]
    if "alpha_hill" in req:
        t = time.perf_counter()
        values["alpha_hill"] = [math.fsum(hill_alpha(m.weight) for m in linear_layers(b).values())
                                / max(1, len(linear_layers(b))) for b in blocks]
        seconds["alpha_hill"] = time.perf_counter() - t
    score_keys = sorted(k for k in req if k.split(":")[0] in ("outlier_ratio", "skew", "kurtosis"))
    if score_keys:
        if scorer is None or calib_ids is None:
            raise PruneRuntimeError("this allocation rule reads the metric's scores; it needs a "
                                    "scorer and calibration data")
        if "G" in metric_requires and gradients is None:  # once, here; handed on to the pruning pass
            from . import gradients as gradients_module
            t = time.perf_counter()
            grads = gradients_module.gradient_norms(model, calib_ids, progress=progress,
                                                    placement=placement)
            seconds["gradients"] = time.perf_counter() - t
        t = time.perf_counter()
        stats = dense_score_statistics(model, calib_ids, scorer, metric_requires, score_keys,
                                       progress=progress, gradients=grads or gradients,
                                       placement=placement, calib_batch=calib_batch)
        seconds["dense_pass"] = time.perf_counter() - t
        for k in score_keys:
            values[k] = [s[k] for s in stats]
    importance = alloc.importances(values, nb)
    block_sparsity = spread_sparsities(importance, params, sparsity, alloc.lam)
    needs = alloc.requires
    plan = AllocationPlan(alloc.text(), alloc.name, sparsity, block_sparsity, {}, values, importance, params,
                          "dense forward" if alloc.needs_scores else "weights only" if "alpha_hill" in needs
                          else "none", seconds, gradients=grads,
                          layer_block={name: b for b, layers in enumerate(shapes) for name in layers})
    if pattern is None:
        plan.layer_sparsity = layer_sparsities(block_sparsity, shapes, sparsity, group=group,
                                               metric_shape=metric_shape)
    else:
        _mixed_nm(plan, shapes, pattern)
    seconds["mapping"] = time.perf_counter() - t_start - sum(seconds.values())
    return plan


def _mixed_nm(plan: AllocationPlan, shapes: list[dict[str, tuple[int, int]]], pattern: tuple[int, int]) -> None:
    """Per-block N of N:M from the block sparsities; the mean of N/M stays the target."""
    n, m = pattern
    for layers in shapes:
        for name, (_, inp) in layers.items():
            if inp % m:
                raise PruneRuntimeError(f"N:M pattern {n}:{m} needs in_features divisible by {m}; "
                                        f"{name} has {inp}")
    caps = [math.floor(MAX_SPARSITY * m + 1e-9)] * len(shapes)
    ns = apportion([s * m for s in plan.block_sparsity], [p / m for p in plan.block_params], caps,
                   n / m * sum(plan.block_params))
    plan.block_sparsity = [k / m for k in ns]
    plan.block_pattern = [f"{k}:{m}" for k in ns]
    plan.layer_pattern = {name: (k, m) for k, layers in zip(ns, shapes) for name in layers}
    plan.layer_sparsity = {name: k / m for k, layers in zip(ns, shapes) for name in layers}
