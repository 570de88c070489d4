"""Fitness of candidate metrics: a fast proxy from cached Gram matrices, and full evaluations.

Everything expensive is done once per search (``Fitness.__init__``): load the model,
tokenize WikiText-2 validation, keep a copy of the dense weights, and run the dense
model once over the calibration batch to collect, for the *screened* layers, every
input statistic a metric can read plus the Gram matrix XᵀX (docs/design.md §4).

Data split (validation only; test is for the final report): the validation token
stream is cut into parts that share no token (``validation_parts``):

    [0, v·L)              the fitness slice: val_windows non-overlapping windows of L = seqlen
    [v·L, (v+s)·L)        the selection slice: the next select_windows windows (s = 0: none)
    [(v+s)·L, end)        where the seeded random calibration windows are drawn

The fitness slice ranks every candidate the search evaluates; the selection slice is read
only at the end, for the few finalists (``search/selection.py``), so the final choice is
made on windows the search never saw. With ``--calib-data`` calibration comes from that
file instead. ``select_windows = 0`` is the split from before the selection slice existed.

Task-specific search (``--eval-data FILE``, LLM-Sieve's setting): the fitness reads the
user's text instead of WikiText-2 validation, cut the same way: the first
``val_windows · seqlen`` tokens of FILE are the held-out evaluation windows, the next
``select_windows · seqlen`` the selection slice. Calibration still comes from
``--calib-data`` (or WikiText-2 validation); when ``--calib-data`` is the same file, its
calibration windows are drawn from the part of FILE after both slices only, so the
fitness never reads text the model was calibrated on.

Proxy (lower is better): for each screened layer, score W with the candidate, mask at
the target sparsity/group/pattern, and measure the output error of the pruned weights
ΔW = W ⊙ mask relative to the dense output energy:

    e_l = tr(ΔW · XᵀX · ΔWᵀ) / tr(W · XᵀX · Wᵀ),      proxy = mean_l e_l

It uses dense statistics (no sequential pruning) and no forward pass. To reach ≥ 50
candidates/minute on a 2-core CPU, two documented approximations (both settable):
- ``proxy_blocks``: only an evenly spaced subset of the decoder blocks is screened
  (all 7 linears of each); 0 = all blocks.
- ``proxy_rows``: the error is measured on a fixed seeded subset of each layer's output
  rows (scores are still computed on the whole layer, so column and whole-tensor
  reductions see every weight). Under ``group=row`` and N:M each row's mask depends on
  that row only, so this is an unbiased estimate of the layer's error; 1 = all rows.
- ``proxy_rank``: XᵀX ≈ V_r Λ_r V_rᵀ + diag(residual). The top-r eigenpairs are exact;
  for the rest only the diagonal is kept, which is the expectation of the residual
  term when the signs of the pruned weights are uncorrelated. Cost per layer
  out·in·r instead of out·in²; 0 = the exact quadratic form.
``bench/bench_search.py`` measures the throughput and the rank correlation of the
approximations with the exact proxy.

Full evaluation: restore the dense weights (no reload), prune with the candidate and its
recipe through ``prunedsl prune``'s own pass (``runtime/job.prune_pass``: sequential, the
real thing, ± the OBS update and an allocation rule), validation perplexity on the
held-out windows. ``select_ppl`` is the same on the selection slice.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import PruneRuntimeError, SearchError
from ..runtime import data
from ..runtime.capture import run_blocks
from ..runtime.models import find_blocks, load_model
from ..runtime.statcache import StatsCache, layer_stats
from ..runtime.stats import GRADIENT_STATISTICS, INPUT_STATISTICS, KNOWN_STATISTICS, DerivedSet
from ..runtime.workbench import Workbench
from .recipe import Recipe
from .obs_proxy import reconstructed_errors
from .select import select_mask

# Every statistic but the gradient ones (G needs --gradients), read live from the operand table.
BASE_STATISTICS = DerivedSet(lambda: frozenset(KNOWN_STATISTICS - GRADIENT_STATISTICS))


@dataclass
class FitnessSettings:
    model: str
    sparsity: float = 0.5
    pattern: tuple[int, int] | None = None
    group: str = "row"                  # row | layer | global
    nsamples: int = 16                  # calibration windows
    seqlen: int = 256                   # tokens per calibration and validation window
    val_windows: int = 16               # held-out validation windows for the fitness
    select_windows: int = 0             # the next windows: the final choice's slice; 0 = none
    seed: int = 0                       # calibration windows
    calib_data: str | None = None
    eval_data: str | None = None        # the fitness reads this text's first val_windows·seqlen tokens
    data_dir: str | None = None
    proxy_blocks: int = 8               # screened blocks, evenly spaced; 0 = all
    proxy_rows: float = 0.25            # fraction of output rows measured; 1 = all
    proxy_rank: int = 64                # low-rank + diagonal Gram; 0 = exact
    gradients: bool = False             # offer G (backward passes, once per search)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Layer:
    name: str
    shape: tuple[int, int]              # (out, in) of the weight
    rows: torch.Tensor                  # (m,) measured output rows, sorted
    w: torch.Tensor                     # (m, in) dense weight of those rows, float32
    stats: dict[str, Any]               # what a compiled metric reads (whole layer)
    energy: float                       # tr(W XᵀX Wᵀ) over the measured rows
    quad: dict[str, torch.Tensor]       # "gram" (in, in) | "factor" (in, r) + "resid" (in,) + "gram_exact"
                                        # (for the +R proxy, search/obs_proxy.py)


def _on_cpu(d: dict[str, Any]) -> dict[str, Any]:
    """The proxy runs on CPU (its mask selection is numpy's): statistics collected on a GPU
    come back once, at collection (on CPU this copies nothing)."""
    return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in d.items()}


def screened_blocks(n_blocks: int, k: int) -> list[int]:
    """``k`` evenly spaced block indices out of ``n_blocks``, first and last included."""
    if k <= 0 or k >= n_blocks:
        return list(range(n_blocks))
    if k == 1:
        return [n_blocks // 2]
    return sorted({round(i * (n_blocks - 1) / (k - 1)) for i in range(k)})


@dataclass(frozen=True)
class ValidationParts:
    """The validation stream's parts (module doc): no token is in two of them."""
    fitness: torch.Tensor                # (1, val_windows·seqlen) the fitness slice
    selection: torch.Tensor | None       # (1, select_windows·seqlen) the selection slice; None: off
    calib: torch.Tensor                  # (nsamples, seqlen) calibration windows


def validation_parts(ids: torch.Tensor, val_windows: int, seqlen: int, nsamples: int, seed: int,
                     calib_source: torch.Tensor | None = None, select_windows: int = 0,
                     what: str = "the validation split") -> ValidationParts:
    """Cut ``ids`` (1, N): the fitness slice, then the selection slice, then calibration
    windows drawn from the rest (or from ``calib_source``): disjoint by construction."""
    if select_windows < 0:
        raise SearchError(f"--select-windows is {select_windows}; it must be at least 0 (0: no selection slice)")
    cut = val_windows * seqlen
    end = cut + select_windows * seqlen
    if ids.shape[1] < end or (calib_source is None and ids.shape[1] - end <= seqlen):
        selection = f" plus {select_windows} selection windows" if select_windows else ""
        wiki = what == "the validation split"
        calib = "" if calib_source is not None else \
            " plus calibration windows" + ("" if wiki else " from the same file")
        raise SearchError(f"{what} has {ids.shape[1]} tokens: too few for {val_windows} "
                          f"evaluation windows of {seqlen}{selection}{calib}",
                          hint="lower --val-windows" + (", --select-windows" if select_windows else "")
                               + " or --seqlen" + ("" if wiki else ", or give a longer text"))
    source = ids[:, end:] if calib_source is None else calib_source
    return ValidationParts(ids[:, :cut], ids[:, cut:end] if select_windows else None,
                           data.calibration_windows(source, nsamples, seqlen, seed))


def split_validation(ids: torch.Tensor, val_windows: int, seqlen: int, nsamples: int, seed: int,
                     calib_source: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(evaluation ids (1, val_windows·seqlen), calibration windows (nsamples, seqlen)):
    ``validation_parts`` without a selection slice."""
    parts = validation_parts(ids, val_windows, seqlen, nsamples, seed, calib_source)
    return parts.fitness, parts.calib


class Fitness:
    """Model, data and cached statistics shared by every candidate of one search."""

    def __init__(self, settings: FitnessSettings, *, progress: bool = True, log=print, loaded=None,
                 placement=None, calib_batch: int | None = None, screening: bool = True):
        """``loaded``: an already loaded ``LoadedModel`` of ``settings.model`` (dense) to reuse.
        placement (runtime/device.py) and calib_batch: where and in what micro-batches this
        run computes; neither is part of the fitness settings. ``screening=False``: full
        evaluations only (a worker of ``search/ray_pool.py``): the proxy's statistics are not
        collected, and G (with ``gradients``) is computed now."""
        self.settings = s = settings
        self.progress = progress
        self.calib_batch = calib_batch
        self.timings: dict[str, float] = {}
        self._obs_factors: dict = {}           # the +R proxy's stacked OBS factors (obs_proxy.py)
        t0 = time.perf_counter()
        self.loaded = loaded or load_model(s.model, placement=placement)
        self.model = self.loaded.model
        self.timings["load"] = time.perf_counter() - t0
        parts = self._data()
        self.val_ids, self.select_ids, self.calib = parts.fitness, parts.selection, parts.calib
        self.bench = Workbench(self.loaded, self.calib, progress=progress,  # dense copies, G once
                               calib_batch=calib_batch)
        self.dense = self.bench.dense
        self.available = BASE_STATISTICS | (GRADIENT_STATISTICS if s.gradients else frozenset())
        t0 = time.perf_counter()
        if screening:
            self.layers = self._collect()
        else:
            self.layers = []
            if s.gradients:
                self._gradients()                  # once, before the first candidate
        self.timings["statistics"] = time.perf_counter() - t0
        g = self.timings.get("gradients")
        log(f"fitness: {s.model} loaded in {self.timings['load']:.1f} s; statistics of "
            f"{len(self.layers)} screened layers in {self.timings['statistics']:.1f} s"
            + (f" (G: {g:.1f} s of it)" if g is not None else ""))

    def _gradients(self) -> dict[str, torch.Tensor]:
        """G of the dense model (once; ``timings["gradients"]``: its cost, for the report)."""
        t0 = time.perf_counter()
        grads = self.bench.gradients()
        self.timings.setdefault("gradients", time.perf_counter() - t0)
        return grads

    # --- data -------------------------------------------------------------------------
    def _data(self) -> ValidationParts:
        s = self.settings
        tok = self.loaded.tokenizer
        if s.eval_data is None:
            ids = data.tokenize(tok, data.load_text("validation", data_dir=s.data_dir))  # (1, N)
            other = None if s.calib_data is None else data.tokenize(tok, data.load_text(path=s.calib_data))
            return validation_parts(ids, s.val_windows, s.seqlen, s.nsamples, s.seed, calib_source=other,
                                    select_windows=s.select_windows)
        return self._task_data(tok)

    def _task_data(self, tok) -> ValidationParts:
        """--eval-data: held-out windows of the user's text; calibration never from that part."""
        s = self.settings
        ids = data.tokenize(tok, data.load_text(path=s.eval_data, what="--eval-data"))  # (1, N)
        same = s.calib_data is not None and Path(s.calib_data).expanduser().resolve() == \
            Path(s.eval_data).expanduser().resolve()
        if s.calib_data is None:
            other = data.tokenize(tok, data.load_text("validation", data_dir=s.data_dir))
        else:
            other = None if same else data.tokenize(tok, data.load_text(path=s.calib_data))
        return validation_parts(ids, s.val_windows, s.seqlen, s.nsamples, s.seed, calib_source=other,
                                select_windows=s.select_windows, what=f"--eval-data {s.eval_data}")

    # --- cached statistics ------------------------------------------------------------
    @torch.no_grad()
    def _collect(self) -> list[_Layer]:
        s = self.settings
        blocks, prefix = find_blocks(self.model)
        keep = set(screened_blocks(len(blocks), s.proxy_blocks))
        grads = self._gradients() if s.gradients else {}
        cache = StatsCache(frozenset(INPUT_STATISTICS), with_gram=True)  # the runtime's statistics
        quads: dict[tuple[int, int], dict[str, torch.Tensor]] = {}  # (block, id(Gram)): one per input
        gen = torch.Generator().manual_seed(s.seed)       # which rows the proxy measures
        layers: list[_Layer] = []

        def on_linear(i: int, name: str, layer: torch.nn.Linear, x: torch.Tensor) -> None:
            if i not in keep:
                return
            entry = cache.get(i, x)
            g = entry["gram"]                      # (in, in) float32
            key = (i, id(g))                       # the cache holds g, so its id is not reused
            if key not in quads:
                if any(b != i for b, _ in quads):
                    quads.clear()                  # only this block's inputs
                quads[key] = _on_cpu(self._quad(g))
            stats = _on_cpu(layer_stats(name, layer, {k: v for k, v in entry.items() if k != "gram"},
                                        grads, weight=self.dense[name]))
            w = stats["W"]                          # (out, in) dense, float32
            out, inp = w.shape
            m = max(1, min(out, round(s.proxy_rows * out)))
            rows = torch.randperm(out, generator=gen)[:m].sort().values if m < out else torch.arange(out)
            wr = w[rows].contiguous()               # (m, in)
            energy = float(((wr @ g.cpu()) * wr).sum())
            layers.append(_Layer(name, (out, inp), rows, wr, stats, energy, quads[key]))

        run_blocks(self.model, self.calib, on_linear, progress=self.progress, desc="statistics",
                   placement=self.bench.placement, calib_batch=self.calib_batch, stats=cache)
        if not layers:
            raise SearchError("no linear layer was reached by the calibration batch")
        return layers

    def _quad(self, g: torch.Tensor) -> dict[str, torch.Tensor]:
        r = self.settings.proxy_rank
        if r <= 0 or r >= g.shape[0]:
            return {"gram": g.float()}
        evals, evecs = torch.linalg.eigh(g.double())            # ascending
        top, vecs = evals[-r:].clamp_min(0), evecs[:, -r:]       # (r,), (in, r)
        factor = vecs * top.sqrt()                               # (in, r): G_r = F Fᵀ
        resid = (torch.diagonal(g) - factor.square().sum(1)).clamp_min(0)  # (in,)
        return {"factor": factor.float(), "resid": resid.float(), "gram_exact": g.float()}

    # --- proxy ------------------------------------------------------------------------
    def check_available(self, requires: frozenset[str]) -> None:
        missing = set(requires) - self.available
        if missing:
            extra = " (G needs --gradients)" if "G" in missing else ""
            raise SearchError(f"this search does not provide {', '.join(sorted(missing))}{extra}",
                              hint=f"available statistics: {', '.join(sorted(self.available))}")

    @torch.no_grad()
    def proxy(self, metric, recipe=None) -> float:
        """Mean relative layer-wise output error of the screened layers (lower is better).
        With a +R ``recipe``: the error left after the OBS update (search/obs_proxy.py), with
        the recipe's selection group; an allocation rule is not seen (uniform sparsity)."""
        s = self.settings
        reconstructing = recipe is not None and recipe.reconstruct
        group_of = (recipe.group or "layer") if reconstructing else s.group
        if not self.layers:
            raise SearchError("this fitness evaluates candidates fully only (screening=False)")
        self.check_available(metric.requires)
        compiled = metric.compile()
        scores = {l.name: compiled(l.stats, layer=l.name) for l in self.layers}
        fractions = None
        if s.group == "global":
            from ..runtime.masks import global_sparsities
            fractions = global_sparsities(scores, s.sparsity)
        masks = []
        for l in self.layers:
            frac = fractions[l.name] if fractions else s.sparsity
            group = "layer" if fractions else group_of
            sc = scores[l.name]
            if group == "row" or s.pattern is not None:        # rows are independent
                mask = select_mask(sc[l.rows] if sc.shape[0] == l.shape[0] else sc, frac, group=group,
                                   pattern=s.pattern, shape=(len(l.rows), l.shape[1]))
            else:                                              # one threshold for the layer
                mask = select_mask(sc, frac, group=group, pattern=s.pattern, shape=l.shape)[l.rows]
            masks.append(mask)
        if reconstructing:                                     # all layers of a width in one sweep
            errors = reconstructed_errors([(l.w, m, l.quad) for l, m in zip(self.layers, masks)],
                                          cache=self._obs_factors)
        else:
            errors = [self._mask_error(l, l.w * m) for l, m in zip(self.layers, masks)]
        total = sum(err / l.energy if l.energy > 0 else 0.0 for l, err in zip(self.layers, errors))
        value = total / len(self.layers)
        if not math.isfinite(value):
            raise PruneRuntimeError("the proxy error is not finite")
        return value

    @staticmethod
    def _mask_error(l: _Layer, dw: torch.Tensor) -> float:
        """tr(ΔW·XᵀX·ΔWᵀ) of the pruned weights ΔW (m, in), exact or low rank + diagonal."""
        if "gram" in l.quad:
            return float(((dw @ l.quad["gram"]) * dw).sum())
        return float((dw @ l.quad["factor"]).square().sum() + (dw.square() @ l.quad["resid"]).sum())

    # --- full evaluation --------------------------------------------------------------
    def _prune(self, metric, recipe=None) -> dict[str, Any]:
        """Prune as ``prunedsl prune`` would (runtime/job.prune_pass) with the candidate's
        recipe (search/recipe.py; None: the formula alone, the search's group, uniform)."""
        from ..api import parse_allocation
        from ..runtime.job import prune_pass
        s = self.settings
        self.check_available(metric.requires)
        r = recipe or Recipe()
        group = r.group if r.group is not None else (None if r.reconstruct else s.group)
        pruned = prune_pass(self.bench, metric, sparsity=s.sparsity, pattern=s.pattern, group=group,
                            reconstruct=r.reconstruct,
                            allocation=parse_allocation(r.allocation) if r.allocation else None)
        out = {"sparsity": pruned.report.sparsity, "prune_seconds": pruned.seconds["prune"]}
        if "allocation" in pruned.seconds:
            out["allocation_seconds"] = pruned.seconds["allocation"]
        return out

    def full(self, metric, recipe=None) -> dict[str, Any]:
        """Prune for real and measure validation perplexity; the model is dense afterwards."""
        try:
            rec = self._prune(metric, recipe)
            res = self.bench.perplexity(self.val_ids, seqlen=self.settings.seqlen)
        finally:
            self.bench.restore()
        if not math.isfinite(res["ppl"]):
            raise PruneRuntimeError("validation perplexity overflowed (the pruned model is broken)")
        return {**rec, "val_ppl": res["ppl"], "eval_seconds": res["seconds"]}

    def select_ppl(self, metric, recipe=None) -> dict[str, Any]:
        """``full`` on the selection slice instead of the fitness slice (``search/selection.py``)."""
        if self.select_ids is None:
            raise SearchError("this search has no selection slice (--select-windows 0)")
        try:
            rec = self._prune(metric, recipe)
            res = self.bench.perplexity(self.select_ids, seqlen=self.settings.seqlen)
        finally:
            self.bench.restore()
        return {**rec, "select_ppl": res["ppl"], "eval_seconds": res["seconds"],
                "select_nll_sums": res["window_nll_sums"]}

    def test_ppl(self, metric, *, seqlen: int, windows: int | None, recipe=None) -> dict[str, Any]:
        """WikiText-2 *test* perplexity (docs/design.md §5) after pruning with ``metric``
        (None: the dense model) and ``recipe`` (as ``full``). For the final report only."""
        ids = data.tokenize(self.loaded.tokenizer, data.load_text("test", data_dir=self.settings.data_dir))
        try:
            rec = self._prune(metric, recipe) if metric is not None else {}
            res = self.bench.perplexity(ids, seqlen=seqlen, max_windows=windows)
        finally:
            self.bench.restore()
        return {**rec, "test_ppl": res["ppl"], "test_windows": res["windows"],
                "eval_seconds": res["seconds"], "test_nll_sums": res["window_nll_sums"]}
