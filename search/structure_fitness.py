"""Fitness of structure-score formulas (``prunedsl search --structure channels|heads|blocks``).

The same contract as ``fitness.Fitness`` (``available``, ``proxy(metric)``, ``full(metric)``),
for ``StructureMetric``s (docs/structures.md). Done once per search: load the model, split
WikiText-2 validation into evaluation and calibration windows (``fitness.split_validation``:
disjoint), and one statistics pass on the dense model over the calibration windows giving
every member layer's statistics (all the search offers: ``W``, the input statistics, ``G``
with ``--gradients``), each block's influence (ShortGPT), and the Gram matrix XᵀX of each
*consumer*'s input (down_proj for channels, o_proj for heads).

Proxy (lower is better, no forward pass): score the structures with the candidate, plan the
removal (uniform: ``round(ratio · n)`` per block, as ``prunedsl prune --structure``), and
measure the consumer's output error from removing those input columns R, relative to its
dense output energy, averaged over the blocks (those of ``structure_blocks`` when given):

    e_b = tr(W[:, R] · (XᵀX)[R, R] · W[:, R]ᵀ) / tr(W · XᵀX · Wᵀ)

It is the exact output change of the consumer (what removal does to the residual stream,
before the next blocks react), not of the model. For ``blocks`` the proxy is the removed
blocks' share of the total block influence (ShortGPT's own criterion: cheap but biased
toward ``shortgpt``; the full evaluation decides). Two formulas that remove the same
structures get the same proxy, so the engine records them as twins.

Full evaluation: ``remove_structures`` on a deep copy of the dense model (removal changes
shapes, so restoring weights in place is not possible; a copy costs one model of memory and
well under a second for SmolLM2, a reload seconds), validation perplexity, the copy dropped.
The scores come from the cached dense statistics, as ``prunedsl prune --structure`` computes
them (same pass, same data), so nothing is recomputed per candidate.

``placement`` (``runtime/device.py``; no offload): where the model is loaded and everything
computes, in its dtype; ``calib_batch``: the statistics pass in micro-batches of that many windows.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import ConfigError, PruneRuntimeError, SearchError
from ..runtime import data
from ..runtime.block_range import resolve_blocks
from ..runtime.capture import run_blocks
from ..runtime.gradients import gradient_norms
from ..runtime.models import load_model
from ..runtime.perplexity import perplexity
from ..runtime.remove import decoder_parameters, remove_structures
from ..runtime.statcache import StatsCache, layer_stats
from ..runtime.stats import GRADIENT_STATISTICS, INPUT_STATISTICS
from ..runtime.structure_plan import RemovalPlan, select_removal
from ..runtime.structure_scoring import DenseStatistics, block_influence_hooks, score_structures
from ..runtime.structures import check_kind, check_ratio, find_structures
from .fitness import BASE_STATISTICS, split_validation

CONSUMER = {"channels": ".mlp.down_proj", "heads": ".self_attn.o_proj"}


@dataclass
class StructureFitnessSettings:
    model: str
    structure: str = "channels"         # channels | heads | blocks
    ratio: float = 0.2                  # fraction of the structures removed (per block; blocks: of all)
    heads_mode: str = "kv_groups"
    structure_blocks: str | None = None  # START:END: the blocks that may lose structures; None: all
    nsamples: int = 16
    seqlen: int = 256
    val_windows: int = 16
    seed: int = 0
    calib_data: str | None = None
    data_dir: str | None = None
    gradients: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StructureFitness:
    """Model, data and dense statistics shared by every structure formula of one search."""

    def __init__(self, settings: StructureFitnessSettings, *, progress: bool = False, log=print,
                 library=None, placement=None, calib_batch: int | None = None):
        self.settings = s = settings
        self.library = library
        check_kind(s.structure, s.heads_mode)
        check_ratio(s.ratio)
        self.progress = progress
        if placement is not None and placement.offload:
            raise SearchError("--offload applies to masked pruning only, not to --structure")
        self.calib_batch = calib_batch
        t0 = time.perf_counter()
        self.loaded = load_model(s.model, placement=placement)
        self.model = self.loaded.model
        self.timings = {"load": time.perf_counter() - t0}
        tok = self.loaded.tokenizer
        ids = data.tokenize(tok, data.load_text("validation", data_dir=s.data_dir))
        other = None if s.calib_data is None else data.tokenize(tok, data.load_text(path=s.calib_data))
        self.val_ids, self.calib = split_validation(ids, s.val_windows, s.seqlen, s.nsamples, s.seed,
                                                    calib_source=other)
        self.groups = find_structures(self.model, s.structure, s.heads_mode)
        try:
            self.blocks = resolve_blocks(s.structure_blocks, len(self.groups))
        except ConfigError as err:
            raise err.for_cli(SearchError) from None
        # a ratio that empties a block fails here, before the statistics pass
        select_removal(self.groups, [torch.zeros(g.count) for g in self.groups], ratio=s.ratio,
                       heads_mode=s.heads_mode, blocks=self.blocks)
        self.available = BASE_STATISTICS | (GRADIENT_STATISTICS if s.gradients else frozenset()) \
            | frozenset({"block_influence"})
        self.decoder_params = decoder_parameters(self.model)
        t0 = time.perf_counter()
        grads = gradient_norms(self.model, self.calib, progress=progress) if s.gradients else {}
        self.dense, self.grams = self._collect(grads)
        self.timings["statistics"] = time.perf_counter() - t0
        log(f"structure fitness: {s.model}, {s.structure} at ratio {s.ratio}; loaded in "
            f"{self.timings['load']:.1f} s, statistics in {self.timings['statistics']:.1f} s")

    @torch.no_grad()
    def _collect(self, grads: dict[str, torch.Tensor]) -> tuple[DenseStatistics, dict[str, torch.Tensor]]:
        s = self.settings
        suffix = CONSUMER.get(s.structure)
        cache = StatsCache(frozenset(INPUT_STATISTICS), with_gram=suffix is not None)
        layers: dict[str, dict[str, Any]] = {}
        grams: dict[str, torch.Tensor] = {}

        def on_linear(i: int, name: str, layer: torch.nn.Linear, x: torch.Tensor) -> None:
            entry = cache.get(i, x)
            layers[name] = layer_stats(name, layer, {k: v for k, v in entry.items() if k != "gram"}, grads)
            if suffix is not None and name.endswith(suffix):
                grams[name] = entry["gram"]

        with block_influence_hooks(self.model) as sums:
            run_blocks(self.model, self.calib, on_linear, progress=self.progress, desc="structure statistics",
                       calib_batch=self.calib_batch, stats=cache)
        blocks = [{"block_influence": torch.tensor(1.0 - c / n, dtype=torch.float32)} if n else {}
                  for c, n in sums]
        return DenseStatistics(layers, blocks), grams

    # --- the plan a formula gives -----------------------------------------------------
    def parse_candidate(self, text: str):
        """A candidate's text as a structure score of this search's kind (``search/pool.py``)."""
        from ..dsl.library import BUILTIN
        from .structure_mode import parse_structure
        return parse_structure(text, self.library or BUILTIN, self.settings.structure)

    def check_available(self, requires) -> None:
        missing = set(requires) - self.available
        if missing:
            extra = " (G needs --gradients)" if "G" in missing else ""
            raise SearchError(f"this search does not provide {', '.join(sorted(missing))}{extra}")

    def plan(self, metric) -> RemovalPlan:
        s = self.settings
        self.check_available(metric.requires)
        if s.structure not in metric.kinds:
            raise SearchError(f"this formula scores {', '.join(sorted(metric.kinds))}, not {s.structure}")
        scores = score_structures(self.groups, self.dense, metric.compile())
        return select_removal(self.groups, scores, ratio=s.ratio, heads_mode=s.heads_mode, blocks=self.blocks)

    # --- proxy ------------------------------------------------------------------------
    @torch.no_grad()
    def proxy(self, metric) -> float:
        plan = self.plan(metric)
        if plan.kind == "blocks":
            influence = [float(b.get("block_influence", 0.0)) for b in self.dense.blocks]
            kept = set(plan.keep[0])
            total = sum(influence)
            value = sum(v for i, v in enumerate(influence) if i not in kept) / total if total > 0 else 0.0
        else:
            errors = []
            for g, keep in zip(self.groups, plan.keep):
                if plan.blocks is not None and g.block not in plan.blocks:
                    continue   # outside the range: nothing removed, not part of the average
                consumer = g.members[-1]                 # the consumer (down_proj / o_proj)
                w = self.dense.layers[consumer.name]["W"]   # (out, in)
                gram = self.grams[consumer.name]            # (in, in)
                drop = [i for i in range(g.count) if i not in set(keep)]
                cols = consumer.index[drop].reshape(-1)
                wr = w[:, cols]
                err = float(((wr @ gram[cols][:, cols]) * wr).sum())
                energy = float(((w @ gram) * w).sum())
                errors.append(err / energy if energy > 0 else 0.0)
            value = sum(errors) / len(errors)
        if not math.isfinite(value):
            raise PruneRuntimeError("the structure proxy is not finite")
        return value

    # --- full evaluation --------------------------------------------------------------
    def full(self, metric) -> dict[str, Any]:
        """Remove the planned structures from a copy of the dense model; validation ppl."""
        t0 = time.perf_counter()
        plan = self.plan(metric)
        model = remove_structures(copy.deepcopy(self.model), plan)
        prune_seconds = time.perf_counter() - t0
        try:
            res = perplexity(model, self.val_ids, seqlen=self.settings.seqlen, progress=self.progress)
            removed = 1.0 - decoder_parameters(model) / self.decoder_params
        finally:
            del model
        if not math.isfinite(res["ppl"]):
            raise PruneRuntimeError("validation perplexity overflowed (the pruned model is broken)")
        return {"removed": plan.removed, "decoder_fraction_removed": removed, "keep": [list(k) for k in plan.keep],
                "prune_seconds": prune_seconds, "val_ppl": res["ppl"], "eval_seconds": res["seconds"]}
