"""Structured pruning end to end: find → score on the dense model → select → remove.

    from prunedsl.runtime.structured_prune import prune_structures
    from prunedsl.runtime.structure_scoring import reference_score
    s = reference_score("wanda_sp", "channels")
    result = prune_structures(model, calib_ids, kind="channels", score_fn=s.fn,
                              requires=s.requires, ratio=0.2)   # blocks="3:-2": blocks 3..L-3 only
    result.plan.to_dict(), result.params_before, result.params_after

The model is changed in place and becomes physically smaller (see ``remove.py``); with
per-block widths (global allocation, a block range) its config carries the per-block record
(``width_record.py``), so ``save_pretrained`` writes a prunedsl-format checkpoint.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from .bias_compensation import STATISTIC, check_compensable, compensate, consumer_means
from .block_range import BlockRange, resolve_blocks
from .remove import decoder_parameters, parameter_count, remove_structures
from .structure_plan import RemovalPlan, select_removal
from .structure_scoring import ScoreFn, collect_dense, score_structures
from .structures import check_kind, find_structures

BlockSpec = str | BlockRange | Sequence[int] | None   # which blocks may lose structures (None: all)


@dataclass(frozen=True)
class StructuredResult:
    plan: RemovalPlan
    params_before: int               # all parameters (tied embedding once)
    params_after: int
    decoder_params_before: int       # parameters of the decoder blocks only
    decoder_params_after: int
    seconds: dict[str, float] = field(default_factory=dict)   # statistics, removal

    @property
    def decoder_fraction_removed(self) -> float:
        return 1.0 - self.decoder_params_after / self.decoder_params_before

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict(), "params_before": self.params_before,
                "params_after": self.params_after, "decoder_params_before": self.decoder_params_before,
                "decoder_params_after": self.decoder_params_after,
                "decoder_fraction_removed": self.decoder_fraction_removed, "seconds": dict(self.seconds)}


def plan_structures(model: nn.Module, calib_ids: torch.Tensor, *, kind: str, score_fn: ScoreFn,
                    requires: frozenset[str], ratio: float | None = None, count: int | None = None,
                    allocation: str = "uniform", heads_mode: str = "kv_groups",
                    blocks: BlockSpec = None, progress: bool = False,
                    calib_batch: int | None = None) -> tuple[RemovalPlan, float]:
    """The removal plan from dense-model scores, and the seconds the statistics took.

    ``blocks``: the blocks that may lose structures, a range ``"3:-2"`` (``block_range.py``)
    or block indices; None: every block. The structures are found (and the settings
    checked) before any statistics pass; the statistics are computed where the model is,
    in micro-batches of ``calib_batch`` windows.
    """
    plan, seconds, _ = _plan(model, calib_ids, kind=kind, score_fn=score_fn, requires=requires,
                             ratio=ratio, count=count, allocation=allocation, heads_mode=heads_mode,
                             blocks=blocks, progress=progress, means=False, calib_batch=calib_batch)
    return plan, seconds


def _plan(model: nn.Module, calib_ids: torch.Tensor, *, kind: str, score_fn: ScoreFn,
          requires: frozenset[str], ratio: float | None, count: int | None, allocation: str,
          heads_mode: str, progress: bool, means: bool, blocks: BlockSpec = None,
          calib_batch: int | None = None) -> tuple[RemovalPlan, float, dict | None]:
    """plan_structures, plus the consumers' mean inputs when ``means`` (bias compensation)."""
    check_kind(kind, heads_mode)
    groups = find_structures(model, kind, heads_mode)
    blocks = resolve_blocks(blocks, len(groups))   # against the model's block count, before the pass
    if ratio is not None or count is not None:  # a bad ratio/count fails before the costly pass
        select_removal(groups, [torch.zeros(g.count) for g in groups], ratio=ratio, count=count,
                       allocation=allocation, heads_mode=heads_mode, blocks=blocks)
    t = time.perf_counter()
    requires = frozenset(requires) | ({STATISTIC} if means else frozenset())
    dense = collect_dense(model, calib_ids, requires, progress=progress, calib_batch=calib_batch)
    scores = score_structures(groups, dense, score_fn)
    mean_inputs = consumer_means(model, kind, dense.layers) if means else None
    seconds = time.perf_counter() - t
    del dense
    plan = select_removal(groups, scores, ratio=ratio, count=count, allocation=allocation,
                          heads_mode=heads_mode, blocks=blocks)
    return plan, seconds, mean_inputs


def prune_structures(model: nn.Module, calib_ids: torch.Tensor, *, bias_compensation: bool = False,
                     **kwargs: Any) -> StructuredResult:
    """``plan_structures`` then ``remove_structures``; same keyword arguments.

    bias_compensation: fold the removed channels' / heads' mean contribution into the
    consumer's bias first (FLAP; ``bias_compensation.py``, refused where the config cannot
    carry that bias)."""
    if bias_compensation:
        check_kind(kwargs.get("kind", ""), kwargs.get("heads_mode", "kv_groups"))
        check_compensable(model, kwargs["kind"])  # before the costly statistics pass
    before, dec_before = parameter_count(model), decoder_parameters(model)
    kwargs.setdefault("progress", False)
    plan, stat_seconds, means = _plan(model, calib_ids, means=bias_compensation,
                                      **{"ratio": None, "count": None, "allocation": "uniform",
                                         "heads_mode": "kv_groups", "blocks": None, **kwargs})
    t = time.perf_counter()
    if means is not None:
        compensate(model, plan, means)
    remove_structures(model, plan)
    return StructuredResult(plan, before, parameter_count(model), dec_before, decoder_parameters(model),
                            {"statistics": stat_seconds, "removal": time.perf_counter() - t})
