"""The jobs behind ``prunedsl prune`` and ``prunedsl eval``: load, calibrate, prune, evaluate, save.

Each returns a plain dict (the ``--json`` output), so the CLI, the benchmarks and the
search share one code path.
"""
from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..config import check_prune_settings, check_selection, check_seqlen, default_group, pattern_text
from ..errors import ConfigError, PruneRuntimeError
from . import data
from .device import resolve_placement
from .models import load_model
from .results import Calibration, EvalResult, Perplexity, PruneResult, TextPerplexity

log = logging.getLogger(__name__)


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
    allocation: object | None = None    # a dsl.allocation.Allocation: per-block sparsity (docs/design.md §3)
    overwrite: bool = False             # replace a non-empty output directory that prunedsl did not write
    within_block: str | None = None     # "sequential" | "parallel"; None: parallel with an allocation
                                        # rule (OWL's protocol), else sequential (docs/allocation.md)
    device: str = "auto"                # auto | cpu | cuda | cuda:N | mps (runtime/device.py)
    dtype: str = "auto"                 # auto (checkpoint's on GPU, float32 on CPU) | float32 | bfloat16 | float16
    offload: bool = False               # model on CPU, each block onloaded to the device for its pass
    calib_batch: int | None = None      # calibration micro-batch (windows); None: the whole batch at once
    eval_data: str | None = None        # a text file: perplexity on it too, by the WikiText-2 test protocol
    tasks: tuple[str, ...] = ()         # lm-eval tasks for zero-shot accuracy (runtime/tasks.py)
    tasks_dir: str | None = None        # lm-eval include path: local task YAML files
    task_limit: int | None = None       # documents per task
    num_fewshot: int = 0
    command: str | None = None          # the command line, for the model card in the output directory


def _validate(job: PruneJob) -> None:
    check_prune_settings(sparsity=job.sparsity, group=job.group, pattern=job.pattern,
                         metric_shape=job.metric.type.shape, allocation=job.allocation is not None,
                         nsamples=job.nsamples, seqlen=job.seqlen, eval_windows=job.eval_windows)
    check_calib_batch(job.calib_batch)


def check_calib_batch(calib_batch: int | None) -> None:
    if calib_batch is not None and (isinstance(calib_batch, bool) or not isinstance(calib_batch, int)
                                    or calib_batch < 1):
        raise ConfigError("{calib_batch} must be a whole number of windows ≥ 1, got {value}",
                          value=calib_batch)


def calibration_ids(tokenizer, job: PruneJob, text: str | None = None) -> tuple[torch.Tensor, str]:
    if text is None:
        text = data.load_text("validation", data_dir=job.data_dir, path=job.calib_data)
    ids = data.tokenize(tokenizer, text)
    source = job.calib_data or "wikitext-2 validation"
    return data.calibration_windows(ids, job.nsamples, job.seqlen, job.seed), source


def run_prune(job: PruneJob) -> PruneResult:
    from .save import check_output_dir, save_pruned
    from .workbench import Workbench
    job = replace(job, group=default_group(job.group, job.reconstruct),
                  within_block=default_within_block(job.within_block, job.allocation))
    _validate(job)
    job.metric.compile()  # a metric that does not compile fails before the model loads
    if job.output:  # cheap checks first: a bad --output used to surface after the whole run
        check_output_dir(job.output, model=job.model, overwrite=job.overwrite)
    calib_text = None
    if job.calib_data:  # missing, binary or empty: said before the load, and read once
        calib_text = data.load_text("validation", path=job.calib_data)
    eval_text = read_eval_data(job.eval_data, calib_data=job.calib_data)
    manager = task_manager_for(job.tasks, job.tasks_dir)  # unknown task names fail before the load

    placement = resolve_placement(job.device, job.dtype, job.offload)  # "cuda but none": before the load

    t0 = time.perf_counter()
    loaded = load_model(job.model, placement=placement)
    load_seconds = time.perf_counter() - t0
    check_context(loaded.model, job.seqlen)
    calib, calib_source = calibration_ids(loaded.tokenizer, job, calib_text)
    bench = Workbench(loaded, calib, progress=job.progress, keep_dense=False,
                      calib_batch=job.calib_batch)
    pruned = prune_pass(bench, job.metric, sparsity=job.sparsity, pattern=job.pattern, group=job.group,
                        reconstruct=job.reconstruct, allocation=job.allocation,
                        on_nonfinite="allow" if job.allow_nonfinite else "error",
                        within_block=job.within_block)
    report, plan, prune_seconds = pruned.report, pruned.plan, pruned.seconds["prune"]
    bench.release()  # free G before evaluation

    result = PruneResult(
        model=job.model, model_source=loaded.source, input=job.metric.source, name=job.metric.name,
        formula=job.metric.formula(), pretty=job.metric.pretty(), latex=job.metric.latex(),
        text=job.metric.text(), canonical=job.metric.canonical(job.group), type=str(job.metric.type),
        requires=sorted(job.metric.requires), target_sparsity=job.sparsity, sparsity=report.sparsity,
        pattern=pattern_text(job.pattern), group=job.group, reconstruct=job.reconstruct,
        within_block=job.within_block,
        placement={**loaded.placement.describe(), "calib_batch": job.calib_batch},
        calibration=Calibration(source=calib_source, nsamples=job.nsamples, seqlen=job.seqlen, seed=job.seed),
        layers=[vars(layer) if not isinstance(layer, dict) else layer for layer in report.layers],
        load_seconds=load_seconds, prune_seconds=prune_seconds,
        allocation=plan.to_dict(report.layers) if plan else None,  # + realized_block_sparsity
        allocation_seconds=sum(plan.seconds.values()) if plan else None,
        seqlen=job.seqlen, torch=torch.__version__, python=platform.python_version())
    if job.evaluate:
        result = replace(result, evaluation=_evaluate(bench, job.seqlen, job.eval_windows, job.data_dir))
    result = replace(result, **extra_evaluations(bench, eval_text, job.eval_data, job.seqlen, job.eval_windows,
                                                 job, manager))
    if job.output:
        from .modelcard import model_card
        from .width_record import record_of
        card = model_card(result, command=job.command, per_block=record_of(loaded.model.config) is not None)
        save_pruned(loaded, job.output, result.to_dict(), card=card)
        result = replace(result, output=str(job.output))
    return result


def prune_pass(bench, metric, *, sparsity: float, pattern: tuple[int, int] | None = None,
               group: str | None = None, reconstruct: bool = False, allocation=None,
               within_block: str | None = None, on_nonfinite: str = "error"):
    """One pruning pass of ``bench``'s model (a ``Workbench``) as ``prunedsl prune`` makes it:
    the group and within-block order default as prune's do (``default_group``: "layer" with
    ``reconstruct``, else "row"; ``default_within_block``: "parallel" with an allocation
    rule), the selection settings are checked, then ``Workbench.prune``. ``run_prune`` and
    the search's full and test evaluations (search/fitness.py) both call it, so a search
    candidate is pruned exactly as the prune command would prune it. Returns ``Pruned``."""
    group = default_group(group, reconstruct)
    within_block = default_within_block(within_block, allocation)
    check_selection(sparsity=sparsity, group=group, pattern=pattern, metric_shape=metric.type.shape,
                    allocation=allocation is not None)
    return bench.prune(metric, sparsity=sparsity, pattern=pattern, group=group, reconstruct=reconstruct,
                       allocation=allocation, on_nonfinite=on_nonfinite, within_block=within_block)


def default_within_block(order: str | None, allocation) -> str:
    """The within-block order when none is given: "parallel" with an allocation rule, where
    it is what makes OWL beat uniform (−12.3% ± 5.2% test ppl over 5 calibration seeds on
    SmolLM2 at 70%, against +0.2% ± 9.3% with "sequential"), else "sequential" (with uniform
    sparsity the two are within noise, and every committed result table was made with it)."""
    if order is not None:
        return order
    return "parallel" if allocation is not None else "sequential"


def check_context(model, seqlen: int) -> None:
    """A window longer than the model's context: fail now, not after minutes of calibration."""
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(context, int) and seqlen > context:
        raise ConfigError("{seqlen} {value} is longer than the model's context of {context} tokens",
                          hint="use at most {context} tokens per window", value=seqlen, context=context)


def _evaluate(bench, seqlen: int, eval_windows: int | None, data_dir: str | None,
              text: str | None = None, what: str = "the test split") -> Perplexity:
    if text is None:
        text = data.load_text("test", data_dir=data_dir)
    ids = data.tokenize(bench.loaded.tokenizer, text)
    if ids.shape[1] < seqlen:
        raise PruneRuntimeError(f"{what} has {ids.shape[1]} tokens, fewer than seqlen {seqlen}",
                                hint="use a longer text or a smaller --seqlen")
    res = bench.perplexity(ids, seqlen=seqlen, max_windows=eval_windows)
    return Perplexity(ppl=res["ppl"], nll=res["nll"], eval_seconds=res["seconds"],
                      eval_windows=res["windows"], eval_tokens=res["tokens"])


def read_eval_data(path: str | None, *, calib_data: str | None = None) -> str | None:
    """The --eval-data text (missing, binary or empty files fail here, before any load)."""
    if path is None:
        return None
    text = data.load_text(path=path, what="--eval-data")
    if calib_data is not None and Path(calib_data).expanduser().resolve() == Path(path).expanduser().resolve():
        log.warning("--eval-data and --calib-data are the same file: the perplexity is measured on text the "
                    "model was calibrated on (give a held-out file to measure what the pruning kept)")
    return text


def task_manager_for(tasks, tasks_dir: str | None):
    """lm-eval's task manager for ``tasks`` (None without tasks); unknown names fail here, so
    call it before the model loads."""
    if not tasks:
        return None
    from .tasks import task_manager
    return task_manager(list(tasks), tasks_dir)


def extra_evaluations(bench, eval_text: str | None, eval_data: str | None, seqlen: int,
                      eval_windows: int | None, settings, manager) -> dict:
    """--eval-data perplexity and --tasks zero-shot accuracy of the model in memory (masked
    prune, structured prune and eval all call this). bench: a Workbench on the model;
    eval_text: ``read_eval_data``'s; settings: anything with tasks, tasks_dir, task_limit and
    num_fewshot (PruneJob, StructuredJob, TaskSettings); manager: ``task_manager_for``'s.
    Returns {"eval_data": TextPerplexity, "zero_shot": dict}, each only when asked for."""
    out: dict = {}
    if eval_text is not None:
        ppl = _evaluate(bench, seqlen, eval_windows, None, text=eval_text, what=f"--eval-data {eval_data}")
        out["eval_data"] = TextPerplexity(source=str(eval_data), perplexity=ppl)
    if manager is not None:
        from .tasks import run_tasks
        zs = run_tasks(bench.loaded.model, bench.loaded.tokenizer, list(settings.tasks), limit=settings.task_limit,
                       num_fewshot=settings.num_fewshot, tasks_dir=settings.tasks_dir, manager=manager)
        out["zero_shot"] = zs.to_dict()
    return out


def saved_eval_settings(model: str) -> tuple[dict, str] | None:
    """seqlen / eval_windows that ``prunedsl prune`` evaluated a saved directory with."""
    record = Path(model).expanduser() / "pruning.json"
    if not record.is_file():
        return None
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # an unreadable record is no reason to refuse the model; defaults apply
    if not isinstance(saved, dict):
        return None
    settings = {k: saved[k] for k in ("seqlen", "eval_windows") if isinstance(saved.get(k), int)}
    return settings, str(record)


@dataclass(frozen=True)
class TaskSettings:
    """What ``prunedsl eval --tasks`` asks lm-eval for."""
    tasks: tuple[str, ...] = ()
    tasks_dir: str | None = None
    task_limit: int | None = None
    num_fewshot: int = 0


def run_eval(model: str, *, seqlen: int | None = None, eval_windows: int | None = None,
             data_dir: str | None = None, progress: bool = True, eval_data: str | None = None,
             tasks: TaskSettings = TaskSettings(), device: str = "auto", dtype: str = "auto",
             offload: bool = False) -> EvalResult:
    """Perplexity of a model. For a directory ``prunedsl prune`` saved, the seqlen and window
    count it was evaluated with are the defaults (so the plain command reproduces its ppl)."""
    from .workbench import Workbench
    settings_from = None
    saved = saved_eval_settings(model)
    if saved is not None:
        settings, record = saved
        if seqlen is None and "seqlen" in settings:
            seqlen, settings_from = settings["seqlen"], record
        if eval_windows is None and "eval_windows" in settings:
            eval_windows, settings_from = settings["eval_windows"], record
    seqlen = 512 if seqlen is None else seqlen
    check_seqlen(seqlen)
    placement = resolve_placement(device, dtype, offload)
    eval_text = read_eval_data(eval_data)
    manager = task_manager_for(tasks.tasks, tasks.tasks_dir)
    t0 = time.perf_counter()
    loaded = load_model(model, placement=placement)
    load_seconds = time.perf_counter() - t0
    check_context(loaded.model, seqlen)
    bench = Workbench(loaded, None, progress=progress, keep_dense=False)
    evaluation = _evaluate(bench, seqlen, eval_windows, data_dir)
    return EvalResult(model=model, model_source=loaded.source, seqlen=seqlen, load_seconds=load_seconds,
                      evaluation=evaluation, settings_from=settings_from,
                      **extra_evaluations(bench, eval_text, eval_data, seqlen, eval_windows, tasks, manager))
