"""The pruning workbench: one loaded model, its calibration batch and its dense weights.

Every caller that prunes and measures (``prunedsl prune``, the search's full evaluations,
the benchmarks) goes through it, so the sequence scorer → allocation plan → prune_model
(± reconstruct) → perplexity → restore exists once. Between calls the model is dense:
``prune`` starts from the saved dense weights (restored every time), and ``restore`` puts them back.

What depends only on the dense model and the calibration batch is computed once per
workbench: the gradient norms ``G`` (backward passes) are cached after the first metric
that reads them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import PruneRuntimeError
from . import gradients as gradients_module
from . import prune as prune_module
from .device import Placement, model_placement
from .perplexity import perplexity
from .rank_guard import rank_safe
from .prune import PruneReport, linear_state, restore_linear_state


@dataclass
class Pruned:
    """One pruning pass of the workbench's model."""
    report: PruneReport
    plan: Any | None                                   # an allocation.AllocationPlan, or None
    seconds: dict[str, float] = field(default_factory=dict)  # "prune" (with G), "allocation"


class Workbench:
    def __init__(self, loaded, calib: torch.Tensor | None, *, progress: bool = True,
                 keep_dense: bool = True, placement: Placement | None = None,
                 calib_batch: int | None = None):
        """loaded: a models.LoadedModel (dense); calib: (nsamples, seqlen) token ids (None:
        evaluation only). keep_dense=False: no copy of the dense weights (one pruning pass
        for good, as ``prunedsl prune`` does; ``restore`` then cannot undo it).
        placement: where blocks compute and whether they are onloaded (default: the one the
        model was loaded with); calib_batch: calibration micro-batch size (None: one batch)."""
        self.loaded = loaded
        self.model = loaded.model
        self.calib = calib
        self.progress = progress
        self.placement = placement or getattr(loaded, "placement", None) or model_placement(loaded.model)
        self.calib_batch = calib_batch
        self.dense = linear_state(self.model) if keep_dense else None  # copies: undo a pruning pass
        self._gradients: dict[str, torch.Tensor] | None = None
        self._pruned = False

    def gradients(self) -> dict[str, torch.Tensor]:
        """G of the dense model over the calibration batch, computed on first use."""
        if self._gradients is None:
            self.restore()
            self._gradients = gradients_module.gradient_norms(self.model, self.calib,
                                                              progress=self.progress,
                                                              placement=self.placement)
        return self._gradients

    def restore(self) -> None:
        """Put the dense weights back (bit-exact copies)."""
        if self.dense is not None:  # always: the caller may have changed the weights too
            restore_linear_state(self.model, self.dense)
        elif self._pruned:
            raise PruneRuntimeError("this workbench kept no dense weights (keep_dense=False)")

    def release(self) -> None:
        """Free what only pruning needs (G), e.g. before a long evaluation."""
        self._gradients = None

    def scorer(self, metric, *, on_nonfinite: str = "error"):
        compiled = metric.compile()

        def score(layer: str, stats: dict) -> torch.Tensor:
            return compiled(stats, layer=layer, on_nonfinite=on_nonfinite)
        return score

    def prune(self, metric, *, sparsity: float, pattern: tuple[int, int] | None = None,
              group: str = "row", reconstruct: bool = False, allocation=None,
              on_nonfinite: str = "error", block_stats: dict[str, list[float]] | None = None,
              calib: torch.Tensor | None = None, within_block: str = "sequential") -> Pruned:
        """Prune the dense model in place with ``metric``; ``restore`` undoes it.

        allocation: a dsl.allocation.Allocation giving per-block sparsity (planned on the
        dense model before any block is pruned); block_stats: its block statistics known
        from an earlier plan (see ``plan_allocation``). calib: other calibration windows for
        this pass only (e.g. one window for a metric that reads no statistic).
        within_block: "sequential" or "parallel" (see ``prune.prune_model``)."""
        self.restore()
        calib = self.calib if calib is None else calib
        scorer = self.scorer(metric, on_nonfinite=on_nonfinite)
        requires = metric.requires
        seconds: dict[str, float] = {}
        plan, layer_sparsity, prune_pattern = None, None, pattern
        if allocation is not None:
            from .allocation import plan_allocation
            plan = plan_allocation(allocation, self.model, calib, scorer, requires,
                                   sparsity=sparsity, group=group, pattern=pattern,
                                   metric_shape=metric.type.shape, progress=self.progress,
                                   block_stats=block_stats,
                                   gradients=self._gradients if "G" in requires else None,
                                   placement=self.placement, calib_batch=self.calib_batch)
            if plan.gradients is not None:  # the statistics pass computed G: keep it
                self._gradients, plan.gradients = plan.gradients, None
            seconds["allocation"] = sum(plan.seconds.values())
            layer_sparsity, prune_pattern = plan.layer_sparsity, None  # N:M: per block
        if not reconstruct:
            scorer = rank_safe(metric, group, scorer, on_nonfinite=on_nonfinite)
        if plan is not None:
            scorer = plan.wrap(scorer)
        t0 = time.perf_counter()
        grads = self.gradients() if "G" in requires else None
        self._pruned = True
        report = prune_module.prune_model(self.model, calib, scorer, requires, sparsity=sparsity,
                                          group=group, pattern=prune_pattern,
                                          layer_sparsity=layer_sparsity, progress=self.progress,
                                          reconstruct=reconstruct, gradients=grads,
                                          within_block=within_block, placement=self.placement,
                                          calib_batch=self.calib_batch)
        seconds["prune"] = time.perf_counter() - t0
        return Pruned(report, plan, seconds)

    def perplexity(self, ids: torch.Tensor, *, seqlen: int, max_windows: int | None = None) -> dict:
        """Perplexity of the model as it is now (pruned or dense) on token ids (1, N)."""
        return perplexity(self.model, ids, seqlen=seqlen, max_windows=max_windows,
                          progress=self.progress, placement=self.placement)
