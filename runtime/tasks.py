"""Zero-shot accuracy through lm-evaluation-harness, on the model already in memory.

    zs = run_tasks(loaded.model, loaded.tokenizer, ["boolq", "piqa"], limit=100)
    zs.to_dict()   # {"tasks": {"boolq": {"acc": ..., "acc_stderr": ...}}, "num_fewshot": 0, ...}

The pruned model is handed to lm-eval's Hugging Face wrapper as an object (``HFLM(pretrained=
model, tokenizer=tok)``): no second load and no save round trip. Tasks are lm-eval's own
(online, they download their datasets as lm-eval does) plus any YAML tasks in ``tasks_dir``
(lm-eval's ``include_path``), which is how tasks run offline. ``lm-eval`` is the optional
extra ``prunedsl[eval]``; it is imported here only.
"""
from __future__ import annotations

import difflib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, PruneRuntimeError

INSTALL_HINT = "pip install 'prunedsl[eval]' (or: pip install lm-eval)"
METRICS = ("acc", "acc_norm")   # what multiple-choice tasks report; others are kept as lm-eval names them


@dataclass(frozen=True)
class TaskScore:
    task: str
    samples: int                            # documents evaluated (after --limit)
    metrics: dict[str, float]               # "acc", "acc_norm", ... (lm-eval's names, filter "none" dropped)
    stderr: dict[str, float | None]         # the same keys: lm-eval's bootstrap / analytic stderr

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": self.samples}
        for name, value in self.metrics.items():
            out[name] = value
            out[f"{name}_stderr"] = self.stderr.get(name)
        return out


@dataclass(frozen=True)
class ZeroShot:
    scores: tuple[TaskScore, ...]
    num_fewshot: int
    limit: int | None
    tasks_dir: str | None
    lm_eval: str                            # lm-eval's version
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": {s.task: s.to_dict() for s in self.scores}, "num_fewshot": self.num_fewshot,
                "limit": self.limit, "tasks_dir": self.tasks_dir, "lm_eval": self.lm_eval,
                "seconds": self.seconds}

    def rows(self) -> list[list[str]]:
        """Table rows: task, samples, acc ± stderr, acc_norm ± stderr ("–" where absent)."""
        return table_rows(self.to_dict())


TABLE_HEADER = ["task", "n", "acc ± stderr", "acc_norm ± stderr"]


def table_rows(zero_shot: dict[str, Any]) -> list[list[str]]:
    """TABLE_HEADER rows from a ``ZeroShot.to_dict()`` record (as saved in pruning.json)."""
    rows = []
    for task, v in zero_shot["tasks"].items():
        names = [m for m in METRICS if m in v]
        score = TaskScore(task=task, samples=v["samples"], metrics={m: v[m] for m in names},
                          stderr={m: v.get(f"{m}_stderr") for m in names})
        rows.append([task, str(score.samples), _pm(score, "acc"), _pm(score, "acc_norm")])
    return rows


def _pm(score: TaskScore, name: str) -> str:
    value = score.metrics.get(name)
    if value is None:
        return "–"
    err = score.stderr.get(name)
    return f"{value:.4f} ± {err:.4f}" if isinstance(err, float) else f"{value:.4f}"


def parse_task_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError("{tasks} is empty", hint="name lm-eval tasks, e.g. boolq,piqa,arc_easy")
    return list(dict.fromkeys(names))


def _import_lm_eval():
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise PruneRuntimeError(f"zero-shot tasks need the lm-eval package ({err})",
                                hint=INSTALL_HINT) from None
    return lm_eval, TaskManager


def task_manager(tasks: list[str], tasks_dir: str | None = None):
    """An lm-eval TaskManager that knows every name in ``tasks`` (checked before any model loads)."""
    _, TaskManager = _import_lm_eval()
    if tasks_dir is not None and not Path(tasks_dir).expanduser().is_dir():
        raise ConfigError("{tasks_dir} {path} is not a directory", hint="a directory of lm-eval task YAML files",
                          path=str(Path(tasks_dir).expanduser()))
    include = str(Path(tasks_dir).expanduser()) if tasks_dir else None
    if include is not None:  # indexing lm-eval's ~14,000 own task files takes half a minute on 2 cores
        local = TaskManager(include_path=include, include_defaults=False)
        if set(tasks) <= set(local.all_tasks):
            return local
    manager = TaskManager(include_path=include)
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        close = {t: difflib.get_close_matches(t, known, n=3) for t in unknown}
        near = "; ".join(f"{t}: did you mean {', '.join(c)}?" for t, c in close.items() if c)
        raise ConfigError("{tasks}: lm-eval has no task named {names}" + (f" ({near})" if near else ""),
                          hint="lm-eval --tasks list shows every task; a local task is a YAML file in "
                               "{tasks_dir}", names=", ".join(unknown))
    return manager


def run_tasks(model, tokenizer, tasks: list[str], *, limit: int | None = None, num_fewshot: int = 0,
              tasks_dir: str | None = None, manager=None, batch_size: int = 1, seed: int = 0) -> ZeroShot:
    """Evaluate ``model`` (in memory) on lm-eval ``tasks``; one TaskScore per task, in order."""
    if limit is not None and limit < 1:
        raise ConfigError("{limit} must be at least 1, got {value}", value=limit)
    if num_fewshot < 0:
        raise ConfigError("{num_fewshot} must be ≥ 0, got {value}", value=num_fewshot)
    if getattr(tokenizer, "eos_token_id", None) is None and getattr(tokenizer, "bos_token_id", None) is None:
        raise PruneRuntimeError("lm-eval needs a tokenizer with an end-of-text or a beginning-of-text token; "
                                "this model's tokenizer has neither")
    lm_eval, _ = _import_lm_eval()
    from lm_eval.models.huggingface import HFLM
    manager = manager or task_manager(tasks, tasks_dir)
    t0 = time.perf_counter()
    device = str(next(model.parameters()).device)
    previous = logging.getLogger("lm_eval").level
    # its INFO lines and expected warnings (a model object, not a name) would bury our summary
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
        out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                                      task_manager=manager, log_samples=False, random_seed=seed,
                                      numpy_random_seed=seed, torch_random_seed=seed,
                                      fewshot_random_seed=seed, verbosity="WARNING")
    except (ValueError, KeyError, FileNotFoundError, ConnectionError, OSError) as err:
        # a dataset that cannot be fetched offline, a malformed local YAML: one message, no traceback
        raise PruneRuntimeError(f"lm-eval could not run {', '.join(tasks)}: {type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else ''}",
                                hint="offline, use tasks from a local directory (--tasks-dir)") from None
    finally:
        logging.getLogger("lm_eval").setLevel(previous)
    model.eval()  # lm-eval may leave the model as it found it; make sure later passes run in eval mode
    return ZeroShot(scores=tuple(_scores(out)), num_fewshot=num_fewshot, limit=limit,
                    tasks_dir=str(tasks_dir) if tasks_dir else None,
                    lm_eval=str(out.get("lm_eval_version") or _version()), seconds=time.perf_counter() - t0)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return "unknown"


def _scores(out: dict[str, Any]) -> list[TaskScore]:
    """lm-eval's ``results`` ({"acc,none": .., "acc_stderr,none": ..}) as TaskScores (groups too)."""
    samples = out.get("n-samples", {})
    scores = []
    for task, res in out["results"].items():
        metrics: dict[str, float] = {}
        stderr: dict[str, float | None] = {}
        for key, value in res.items():
            name, _, filt = key.partition(",")
            if not filt or name.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            label = name if filt == "none" else f"{name},{filt}"
            metrics[label] = float(value)
            err = res.get(f"{name}_stderr,{filt}")
            stderr[label] = float(err) if isinstance(err, (int, float)) else None
        order = sorted(metrics, key=lambda m: (METRICS.index(m) if m in METRICS else len(METRICS), m))
        n = samples.get(task, {}).get("effective", res.get("sample_len", 0))
        scores.append(TaskScore(task=task, samples=int(n or 0), metrics={m: metrics[m] for m in order},
                                stderr={m: stderr[m] for m in order}))
    return scores
