"""The job behind ``prunedsl prune --structure …``: load, calibrate, score structures on the
dense model, remove them, evaluate, save a smaller model.

With one width per block (uniform allocation over every block, or blocks removed) the saved
directory loads with plain ``AutoModelForCausalLM.from_pretrained`` (the config carries the new
widths / layer count). With per-block widths (``allocation="global"``, a ``structure_blocks``
range) it is a prunedsl-format checkpoint: config.json has the widest block's widths and the
per-block record (``width_record.py``), plain transformers refuses it, ``load_model`` reads it
(``structured_checkpoint.py``); ``checkpoint_format`` in the record says which. ``pruning.json``
records what was removed
(``structured.plan.keep``: the kept structure indices per block, in the dense model's numbering)
and ``placement`` where and in which dtype it ran, as the masked job's does; ``README.md`` is its
model card (``structured_card.py``).

``device``/``dtype``/``calib_batch`` are the masked job's (``runtime/device.py``); ``offload`` is
refused: the dense statistics keep every member layer's weight (float32) until the scores are
taken, so onloading blocks one at a time would not bound device memory.

``eval_data`` and ``tasks`` are the masked job's too: perplexity on the user's text and lm-eval
zero-shot accuracy of the smaller model in memory (``job.extra_evaluations``), recorded under
``eval_data`` / ``zero_shot`` as the masked record has them; ``library`` is the ``--library``
definitions a ``metric`` may name.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from typing import Any

import torch

from ..config import check_seqlen
from ..dsl.library import BUILTIN, Library
from ..errors import ConfigError
from . import data
from .device import resolve_placement
from .job import check_calib_batch, extra_evaluations, read_eval_data, task_manager_for
from .block_range import parse_block_range
from .structure_plan import ALLOCATIONS
from .structure_scoring import language_score
from .structures import check_kind, check_ratio

DEFAULT_METRIC = {"channels": "wanda_sp", "heads": "wanda_sp", "blocks": "shortgpt"}
# The runtime's reference scores by their first names, as library structure scores.
ALIASES = {"magnitude": "magnitude_sp", "block_influence": "shortgpt"}


@dataclass
class StructuredJob:
    model: str
    structure: str                       # channels | heads | blocks
    ratio: float                         # fraction of the structures removed (blocks: of the blocks)
    metric: str | None = None            # a structure score (library name or formula); None: DEFAULT_METRIC
    heads_mode: str = "kv_groups"
    allocation: str = "uniform"
    structure_blocks: str | None = None  # START:END, the blocks that may lose structures; None: all
    bias_compensation: bool = False      # FLAP: fold removed structures' mean output into a bias
    nsamples: int = 32
    seqlen: int = 512
    seed: int = 0
    calib_data: str | None = None
    data_dir: str | None = None
    eval_windows: int | None = None
    output: str | None = None
    evaluate: bool = True
    overwrite: bool = False
    progress: bool = True
    device: str = "auto"                 # auto | cpu | cuda | cuda:N | mps (runtime/device.py)
    dtype: str = "auto"                  # auto (checkpoint's on GPU, float32 on CPU) | float32 | bfloat16 | float16
    offload: bool = False                # refused (see the module docstring)
    calib_batch: int | None = None       # statistics in micro-batches of this many windows
    eval_data: str | None = None         # a text file: perplexity on it too, by the WikiText-2 test protocol
    tasks: tuple[str, ...] = ()          # lm-eval tasks for zero-shot accuracy (runtime/tasks.py)
    tasks_dir: str | None = None         # lm-eval include path: local task YAML files
    task_limit: int | None = None        # documents per task
    num_fewshot: int = 0
    library: Library = BUILTIN           # the built-in definitions plus --library files
    command: str | None = None           # the command line, for the model card in the output directory

    @property
    def metric_name(self) -> str:
        name = self.metric or DEFAULT_METRIC[self.structure]
        return ALIASES.get(name, name)

    def score(self):
        return language_score(self.metric_name, self.structure, self.library)


def validate(job: StructuredJob) -> None:
    """Every setting checked before the model loads."""
    check_kind(job.structure, job.heads_mode)
    check_ratio(job.ratio)
    job.score()  # parse and check the formula for this kind before anything loads
    if job.allocation not in ALLOCATIONS:
        raise ConfigError("unknown {structure_allocation} {value!r}; choose one of {choices}",
                          value=job.allocation, choices=", ".join(ALLOCATIONS))
    if job.bias_compensation and job.structure == "blocks":
        raise ConfigError("{bias_compensation} applies to channels and heads, not blocks",
                          hint="removing whole blocks leaves no consumer to hold a bias")
    if job.structure_blocks is not None:
        if job.structure == "blocks":
            raise ConfigError("{structure_blocks} applies to channels and heads, not blocks",
                              hint="the block ranking is over every block; leave {structure_blocks} out")
        parse_block_range(job.structure_blocks)  # its form now; against the block count after the load
    for name in ("nsamples", "seqlen"):
        if getattr(job, name) < 1:
            raise ConfigError("{%s} must be >= 1, got {value}" % name, value=getattr(job, name))
    check_seqlen(job.seqlen)
    check_calib_batch(job.calib_batch)
    if job.offload:
        raise ConfigError("{offload} applies to masked pruning only: {structure} keeps every layer's "
                          "weight on the device until the scores are taken, so onloading one block at a time "
                          "would not bound device memory",
                          hint="leave out {offload} ({dtype} bfloat16 halves the model's memory)")


def run_structured(job: StructuredJob) -> dict[str, Any]:
    """Run the job; returns the record written to pruning.json (and printed with --json)."""
    from .job import calibration_ids, check_context
    from .models import load_model
    from .perplexity import perplexity
    from .save import check_output_dir, save_pruned
    from .structured_card import config_widths, structured_model_card
    from .structured_prune import prune_structures
    from .width_record import record_of
    from .workbench import Workbench
    validate(job)
    score = job.score()
    if job.output:
        check_output_dir(job.output, model=job.model, overwrite=job.overwrite)
    calib_text = data.load_text("validation", path=job.calib_data) if job.calib_data else None
    eval_text = read_eval_data(job.eval_data, calib_data=job.calib_data)
    manager = task_manager_for(job.tasks, job.tasks_dir)  # unknown task names fail before the load
    placement = resolve_placement(job.device, job.dtype)  # "cuda but none": before the load
    t0 = time.perf_counter()
    loaded = load_model(job.model, placement=placement)
    load_seconds = time.perf_counter() - t0
    check_context(loaded.model, job.seqlen)
    calib, calib_source = calibration_ids(loaded.tokenizer, job, calib_text)
    widths_before = config_widths(loaded.model)
    result = prune_structures(loaded.model, calib, kind=job.structure, score_fn=score.fn,
                              requires=score.requires, ratio=job.ratio, allocation=job.allocation,
                              heads_mode=job.heads_mode, blocks=job.structure_blocks, progress=job.progress,
                              bias_compensation=job.bias_compensation, calib_batch=job.calib_batch)
    per_block = record_of(loaded.model.config)   # widths a Hugging Face config cannot say
    record: dict[str, Any] = {
        "model": job.model, "model_source": loaded.source,
        "structure": job.structure, "structure_metric": score.name, "structure_metric_doc": score.doc,
        "ratio": job.ratio, "heads_mode": job.heads_mode if job.structure == "heads" else None,
        "allocation": result.plan.allocation, "structure_blocks": job.structure_blocks,
        "bias_compensation": job.bias_compensation,
        "structured": result.to_dict(),
        "calibration": {"source": calib_source, "nsamples": job.nsamples, "seqlen": job.seqlen,
                        "seed": job.seed},
        "placement": {**loaded.placement.describe(), "calib_batch": job.calib_batch},
        "load_seconds": load_seconds, "ppl": None, "seqlen": job.seqlen, "eval_windows": None,
        "loadable_by_transformers": per_block is None,
        "checkpoint_format": "transformers" if per_block is None else "prunedsl",
        "torch": torch.__version__, "python": platform.python_version()}
    if job.evaluate:
        ids = data.tokenize(loaded.tokenizer, data.load_text("test", data_dir=job.data_dir))
        ev = perplexity(loaded.model, ids, seqlen=job.seqlen, max_windows=job.eval_windows,
                        progress=job.progress, placement=loaded.placement)
        record.update(ppl=ev["ppl"], nll=ev["nll"], eval_windows=ev["windows"], eval_seconds=ev["seconds"])
    bench = Workbench(loaded, None, progress=job.progress, keep_dense=False)  # evaluation only
    extras = extra_evaluations(bench, eval_text, job.eval_data, job.seqlen, job.eval_windows, job, manager)
    if "eval_data" in extras:  # keys only when asked for, as in the masked record
        record["eval_data"] = extras["eval_data"].to_dict()
    if "zero_shot" in extras:
        record["zero_shot"] = extras["zero_shot"]
    if job.output:
        definition = job.library.of_kind("structure").get(score.name)  # a library score: its comment
        card = structured_model_card(record, widths_before=widths_before, widths_after=config_widths(loaded.model),
                                     latex=score.latex, description=definition.doc if definition else None,
                                     command=job.command)
        save_pruned(loaded, job.output, record, card=card)
        record["output"] = str(job.output)
    return record
