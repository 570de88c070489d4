"""Sequential, block-streaming pruning with a user metric (docs/design.md §2).

One capture forward records every decoder block's call (see ``capture.py``); then each
block runs once over the whole calibration batch. A forward pre-hook on each of the
block's nn.Linear layers, in the order the block calls them:

1. takes the layer's input X and computes the required statistics (once per distinct
   input tensor: q/k/v, and gate/up, share theirs),
2. calls ``scorer(layer_name, stats) -> scores`` and masks the lowest scores at the
   layer's sparsity, zeroing those weights in place,
3. lets the layer run with its pruned weight.

So pruning is *true-sequential within a block* by default: o_proj sees the output of the
pruned q/k/v, the MLP sees the pruned attention, and block i+1 sees the outputs of the
pruned blocks <= i. The cost is one forward per block, i.e. about one forward of the model.
``within_block="parallel"`` scores every linear of a block on the block's unpruned input
(Wanda's, OWL's and llm-compressor's order; still sequential across blocks), at the cost
of a second forward per block.

``group="global"`` first scores every layer on the dense model (``dense_scores``), picks
one global threshold (``masks.global_sparsities``) and then prunes sequentially with
those per-layer fractions and ``group="layer"``, so the total count is exact.
The LM head and embeddings are never pruned. If the scorer raises, the layers pruned so
far stay pruned: keep ``linear_state(model)`` to restore the dense weights.

``reconstruct=True`` adds SparseGPT's OBS weight update (``obs.py``): the layer's Gram
matrix XᵀX is collected with the other statistics, and the mask is chosen *during* the
column sweep, SparseGPT's way: at the start of each block of 128 columns (each group of M
columns for N:M) the metric is re-evaluated on the current, already-updated weights, with
``hinv`` the conditioned inverse-Hessian diagonal [H_{j:,j:}⁻¹]_00 of the sweep, and that
block's lowest scores are pruned (exact per-row / per-layer counts). With
``group="layer"`` (the job's default with reconstruct) one threshold covers all rows of the
block, as in SparseGPT's code and paper; ``group="row"`` prunes the same share of every row
of the block instead. So ``sparsegpt`` + reconstruct with ``group="layer"`` is SparseGPT,
and any other per-weight metric gets the same treatment.
Structured (Row/Col) scores pick their channels once, up front; then the sweep updates
the kept weights (a pruned output row has nothing left to update).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..config import GROUPS
from ..errors import NonFiniteScoreError, PruneRuntimeError
from .capture import run_blocks
from .device import Placement
from .gradients import gradient_norms
from .masks import global_sparsities, prune_mask
from .models import find_blocks, linear_layers
from .obs import inverse_cholesky, metric_select, reconstruct as obs_reconstruct
from .statcache import StatsCache, layer_stats
from .stats import check_requires

# scorer(layer name, {statistic: tensor}) -> scores (out, in), (out, 1) or (1, in)
Scorer = Callable[[str, dict[str, Any]], torch.Tensor]


@dataclass
class LayerResult:
    name: str
    shape: tuple[int, int]
    pruned: int
    total: int
    sparsity: float


@dataclass
class PruneReport:
    layers: list[LayerResult]
    pruned: int                    # over all pruned linear layers
    total: int
    sparsity: float
    group: str
    pattern: tuple[int, int] | None
    seconds: dict[str, float]      # capture, blocks (and dense_scores, gradients)
    not_run: list[str] = field(default_factory=list)  # linears no calibration token reached
    reconstruct: bool = False      # SparseGPT's OBS update was applied

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _score(scorer: Scorer, name: str, stats: dict[str, Any]) -> torch.Tensor:
    scores = scorer(name, stats)
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise PruneRuntimeError(
            f"layer {name}: the metric gave {shape}, expected scores of shape "
            f"{tuple(stats['W'].shape)} (or (out, 1) / (1, in) for structured pruning)")
    return scores


def _block_layers(model: nn.Module) -> dict[str, nn.Linear]:
    blocks, prefix = find_blocks(model)
    return {f"{prefix}.{i}.{n}": m for i, b in enumerate(blocks) for n, m in linear_layers(b).items()}


def linear_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every block linear's weight, to undo a pruning pass."""
    return {name: m.weight.detach().clone() for name, m in _block_layers(model).items()}


@torch.no_grad()
def restore_linear_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for name, m in _block_layers(model).items():
        m.weight.copy_(state[name])


def dense_scores(model: nn.Module, calib_ids: torch.Tensor, scorer: Scorer,
                 requires: frozenset[str], *, progress: bool = True,
                 placement: Placement | None = None,
                 calib_batch: int | None = None) -> dict[str, torch.Tensor]:
    """Scores of every block linear on the dense model (nothing is pruned)."""
    requires = frozenset(requires)
    check_requires(requires)
    grads = gradient_norms(model, calib_ids, progress=progress,
                           placement=placement) if "G" in requires else {}
    cache = StatsCache(requires)
    out: dict[str, torch.Tensor] = {}

    def on_linear(i: int, name: str, layer: nn.Linear, x: torch.Tensor) -> None:
        scores = _score(scorer, name, layer_stats(name, layer, cache.get(i, x), grads))
        if scores.data_ptr() == layer.weight.data_ptr():  # e.g. the metric `W` itself
            scores = scores.clone()
        out[name] = scores.detach()

    run_blocks(model, calib_ids, on_linear, progress=progress, desc="dense scores",
               placement=placement, calib_batch=calib_batch, stats=cache)
    return out


@torch.no_grad()
def prune_model(model: nn.Module, calib_ids: torch.Tensor, scorer: Scorer,
                requires: frozenset[str], *, sparsity: float, group: str = "row",
                pattern: tuple[int, int] | None = None,
                layer_sparsity: dict[str, float] | None = None,
                progress: bool = True, reconstruct: bool = False,
                gradients: dict[str, torch.Tensor] | None = None,
                within_block: str = "sequential", placement: Placement | None = None,
                calib_batch: int | None = None) -> PruneReport:
    """Prune every decoder-block linear of ``model`` in place; see the module docstring.

    calib_ids: (nsamples, seqlen) token ids. requires: the statistics the scorer reads.
    layer_sparsity: {full layer name: fraction} overriding ``sparsity`` per layer.
    reconstruct: apply SparseGPT's OBS weight update (blockwise mask selection).
    gradients: a ``gradient_norms`` result of this dense model to reuse for ``G``.
    within_block: "sequential" (each linear sees the pruned layers before it in its block)
    or "parallel" (each linear sees the block's unpruned input); see the module docstring.
    placement: where blocks compute (``device.py``; default: where the model is).
    calib_batch: micro-batches of this many windows (``microbatch.py``); None: one batch.
    """
    requires = frozenset(requires)
    check_requires(requires)
    if group not in GROUPS:
        raise PruneRuntimeError(f"unknown comparison group {group!r}; expected one of {GROUPS}")
    if not 0.0 <= sparsity <= 1.0:
        raise PruneRuntimeError(f"sparsity must be in [0, 1], got {sparsity}")
    seconds: dict[str, float] = {}
    layers = _block_layers(model)
    unknown = sorted(set(layer_sparsity or {}) - set(layers))
    if unknown:
        raise PruneRuntimeError(f"layer_sparsity names unknown layers: {unknown[:5]}",
                                hint=f"layer names look like {next(iter(layers))}")
    mask_group = group
    if group == "global":
        if layer_sparsity or pattern:
            raise PruneRuntimeError("group='global' sets the per-layer sparsity itself; "
                                    "it cannot be combined with layer_sparsity or an N:M pattern")
        t = time.perf_counter()
        fractions = global_sparsities(dense_scores(model, calib_ids, scorer, requires,
                                                   progress=progress, placement=placement,
                                                   calib_batch=calib_batch), sparsity)
        seconds["dense_scores"] = time.perf_counter() - t
        layer_sparsity, mask_group = fractions, "layer"

    grads: dict[str, torch.Tensor] = {}
    if "G" in requires:
        t = time.perf_counter()
        grads = gradients if gradients is not None else gradient_norms(model, calib_ids,
                                                                        progress=progress,
                                                                        placement=placement)
        seconds["gradients"] = time.perf_counter() - t
    cache = StatsCache(requires, with_gram=reconstruct, keep_inverse=reconstruct)
    results: list[LayerResult] = []
    seconds["reconstruct"] = 0.0

    def on_linear(i: int, name: str, layer: nn.Linear, x: torch.Tensor) -> None:
        x_stats = cache.get(i, x)
        stats = layer_stats(name, layer, x_stats, grads)
        scores = _score(scorer, name, stats)
        target = layer_sparsity.get(name, sparsity) if layer_sparsity else sparsity
        try:
            if reconstruct:
                t = time.perf_counter()
                mask = _reconstruct_layer(scorer, name, layer, stats, scores, obs_factor(x_stats),
                                          target, mask_group, pattern)
                seconds["reconstruct"] += time.perf_counter() - t
            else:
                mask = prune_mask(scores, target, group=mask_group, pattern=pattern,
                                  shape=tuple(layer.weight.shape))
                layer.weight.masked_fill_(mask, 0)
        except NonFiniteScoreError as e:
            raise NonFiniteScoreError(f"layer {name}: {e.message}", hint=e.hint) from None
        except PruneRuntimeError as e:
            raise PruneRuntimeError(f"layer {name}: {e.message}", hint=e.hint) from None
        pruned, total = int(mask.sum()), mask.numel()
        results.append(LayerResult(name, tuple(mask.shape), pruned, total, pruned / total))

    run = run_blocks(model, calib_ids, on_linear, progress=progress, desc="pruning",
                     within_block=within_block, placement=placement, calib_batch=calib_batch,
                     stats=cache)
    seconds["capture"] = run["capture_seconds"]
    seconds["blocks"] = run["blocks_seconds"]
    pruned = sum(r.pruned for r in results)
    total = sum(r.total for r in results) + sum(layers[n].weight.numel() for n in run["not_run"])
    if not reconstruct:
        del seconds["reconstruct"]
    return PruneReport(results, pruned, total, pruned / max(total, 1), group, pattern,
                       seconds, run["not_run"], reconstruct)


def obs_factor(x_stats: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The OBS factor ``obs.inverse_cholesky`` of a StatsCache entry's Gram, computed once
    per input (layers sharing an input share it), from the inverse behind hinv if kept."""
    if "obs_chol" not in x_stats:
        x_stats["obs_chol"] = inverse_cholesky(x_stats["gram"], inverse=x_stats.pop("gram_inverse", None))
    return x_stats["obs_chol"]


def _reconstruct_layer(scorer: Scorer, name: str, layer: nn.Linear, stats: dict[str, Any],
                       scores: torch.Tensor, chol: tuple[torch.Tensor, torch.Tensor], sparsity: float,
                       group: str, pattern: tuple[int, int] | None) -> torch.Tensor:
    """Prune ``layer`` with OBS updates (see the module docstring); returns the mask."""
    shape = tuple(layer.weight.shape)
    if tuple(scores.shape) == shape:   # per-weight: SparseGPT's blockwise selection

        # Re-scoring a partly pruned weight can give NaN/inf in columns already decided
        # (RIA's |W|/col_sum(|W|) is 0/0 in a fully pruned column); only the block being
        # decided is used, so only it must be finite. Dead inputs' weights were set to 0 (as
        # SparseGPT does); where the metric is undefined there (0/0) they rank lowest, as
        # SparseGPT's saliency 0 ranks them.
        unchecked: dict[str, Any] = {}
        dead = chol[1]

        def score(w: torch.Tensor, hinv: torch.Tensor) -> torch.Tensor:
            s = {**stats, "W": w, "hinv": hinv}
            unchecked.clear()
            try:
                return _score(scorer, name, s)
            except NonFiniteScoreError as e:
                raw = getattr(e, "scores", None)  # a compiled metric's scores as computed
                if raw is None:
                    raise
                if bool(dead.any()):
                    cols = raw[:, dead]
                    raw[:, dead] = cols.masked_fill(~torch.isfinite(cols), float("-inf"))
                unchecked.update(error=e, scores=raw)
                return raw

        inner = metric_select(score, sparsity, group=group, pattern=pattern)

        def select(w: torch.Tensor, hinv: torch.Tensor, a: int, b: int) -> torch.Tensor:
            try:
                mask = inner(w, hinv, a, b)
                if unchecked:
                    bad = ~torch.isfinite(unchecked["scores"][:, a:b])   # (out, b - a)
                    bad[:, dead[a:b]] = False                               # ranked lowest above
                    if bool(bad.any()):
                        raise unchecked["error"]
            except NonFiniteScoreError as e:
                raise NonFiniteScoreError(
                    "with --reconstruct the metric is re-scored on the partly pruned weights at "
                    f"each 128-column block, and is not finite in columns {a}..{b - 1}: {e.message}",
                    hint="pruned weights are 0, and a reduction over them reaches the columns being "
                         "decided (e.g. |W| / row_min(|W|)); write the metric so it stays finite "
                         "there, or prune without --reconstruct"
                ) from None
            return mask
    else:                              # structured: channels chosen once, up front
        fixed = prune_mask(scores, sparsity, group=group, pattern=pattern, shape=shape)

        def select(w: torch.Tensor, hinv: torch.Tensor, a: int, b: int) -> torch.Tensor:
            return fixed[:, a:b]

    w, mask = obs_reconstruct(layer.weight.detach(), None, select, chol=chol,
                              group_cols=pattern[1] if pattern else None)
    layer.weight.copy_(w)
    return mask
