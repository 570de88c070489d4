"""The jobs behind ``prunedsl prune`` and ``prunedsl eval``: load, calibrate, prune, evaluate, save.

Each returns a plain dict (the ``--json`` output), so the CLI, the benchmarks and the
search share one code path.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, replace

import torch

from ..config import check_prune_settings, check_seqlen, default_group
from ..errors import PruneRuntimeError
from . import data
from .models import load_model


@dataclass
class PruneJob:
    model: str
    metric: object                      # a prunedsl.Metric
    sparsity: float = 0.5
    pattern: tuple[int, int] | None = None
    group: str | None = None            # None: "row", or "layer" with reconstruct (SparseGPT's)
    nsamples: int = 32
    seqlen: int = 512
    seed: int = 0
    calib_data: str | None = None       # a text file instead of WikiText-2 validation
    data_dir: str | None = None
    eval_windows: int | None = None
    output: str | None = None
    evaluate: bool = True
    allow_nonfinite: bool = False
    reconstruct: bool = False           # SparseGPT's OBS weight update after masking (runtime/obs.py)
    progress: bool = True
    allocation: object | None = None    # a dsl.allocation.Allocation: per-block sparsity (DESIGN.md §3)


def _validate(job: PruneJob) -> None:
    check_prune_settings(sparsity=job.sparsity, group=job.group, pattern=job.pattern,
                         metric_shape=job.metric.type.shape, allocation=job.allocation is not None,
                         nsamples=job.nsamples, seqlen=job.seqlen, eval_windows=job.eval_windows)


def calibration_ids(tokenizer, job: PruneJob) -> tuple[torch.Tensor, str]:
    text = data.load_text("validation", data_dir=job.data_dir, path=job.calib_data)
    ids = data.tokenize(tokenizer, text)
    source = job.calib_data or "wikitext-2 validation"
    return data.calibration_windows(ids, job.nsamples, job.seqlen, job.seed), source


def run_prune(job: PruneJob) -> dict:
    from .save import save_pruned
    from .workbench import Workbench
    job = replace(job, group=default_group(job.group, job.reconstruct))
    _validate(job)
    job.metric.compile()  # a metric that does not compile fails before the model loads

    t0 = time.perf_counter()
    loaded = load_model(job.model)
    load_seconds = time.perf_counter() - t0
    calib, calib_source = calibration_ids(loaded.tokenizer, job)
    bench = Workbench(loaded, calib, progress=job.progress, keep_dense=False)
    pruned = bench.prune(job.metric, sparsity=job.sparsity, pattern=job.pattern, group=job.group,
                         reconstruct=job.reconstruct, allocation=job.allocation,
                         on_nonfinite="allow" if job.allow_nonfinite else "error")
    report, plan, prune_seconds = pruned.report, pruned.plan, pruned.seconds["prune"]
    bench.release()  # free G before evaluation

    pattern = "unstructured" if job.pattern is None else f"{job.pattern[0]}:{job.pattern[1]}"
    record = {
        "model": job.model,
        "model_source": loaded.source,
        "input": job.metric.source,
        "name": job.metric.name,
        "formula": job.metric.formula(),
        "pretty": job.metric.pretty(),
        "latex": job.metric.latex(),
        "text": job.metric.text(),
        "canonical": job.metric.canonical(job.group),
        "type": str(job.metric.type),
        "requires": sorted(job.metric.requires),
        "target_sparsity": job.sparsity,
        "sparsity": report.sparsity,
        "pattern": pattern,
        "group": job.group,
        "reconstruct": job.reconstruct,
        "calibration": {"source": calib_source, "nsamples": job.nsamples, "seqlen": job.seqlen,
                        "seed": job.seed},
        "layers": [vars(layer) if not isinstance(layer, dict) else layer for layer in report.layers],
        "load_seconds": load_seconds,
        "prune_seconds": prune_seconds,
        "allocation": plan.to_dict(report.layers) if plan else None,  # + realized_block_sparsity
        "allocation_seconds": sum(plan.seconds.values()) if plan else None,
        "ppl": None,
        "eval_seconds": None,
        "eval_windows": None,
        "seqlen": job.seqlen,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if job.evaluate:
        record.update(_evaluate(bench, job.seqlen, job.eval_windows, job.data_dir))
    if job.output:
        save_pruned(loaded, job.output, record)
        record["output"] = str(job.output)
    return record


def _evaluate(bench, seqlen: int, eval_windows: int | None, data_dir: str | None) -> dict:
    ids = data.tokenize(bench.loaded.tokenizer, data.load_text("test", data_dir=data_dir))
    if ids.shape[1] < seqlen:
        raise PruneRuntimeError(f"the test split has {ids.shape[1]} tokens, fewer than --seqlen {seqlen}")
    res = bench.perplexity(ids, seqlen=seqlen, max_windows=eval_windows)
    return {"ppl": res["ppl"], "nll": res["nll"], "eval_seconds": res["seconds"],
            "eval_windows": res["windows"], "eval_tokens": res["tokens"]}


def run_eval(model: str, *, seqlen: int = 512, eval_windows: int | None = None,
             data_dir: str | None = None, progress: bool = True) -> dict:
    from .workbench import Workbench
    check_seqlen(seqlen)
    t0 = time.perf_counter()
    loaded = load_model(model)
    load_seconds = time.perf_counter() - t0
    res = _evaluate(Workbench(loaded, None, progress=progress, keep_dense=False), seqlen, eval_windows,
                    data_dir)
    return {"model": model, "model_source": loaded.source, "seqlen": seqlen,
            "windows": res["eval_windows"], "load_seconds": load_seconds, **res}
