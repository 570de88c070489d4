"""What ``run_prune`` and ``run_eval`` return: typed results whose ``to_dict()`` is the
``--json`` output and the saved ``pruning.json`` (same keys, in the same order, as always)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Calibration:
    source: str
    nsamples: int
    seqlen: int
    seed: int

    def describe(self) -> str:
        """One line for people: the terminal summary and the model cards."""
        return f"{self.nsamples} × {self.seqlen} tokens from {self.source} (seed {self.seed})"


@dataclass(frozen=True)
class Perplexity:
    ppl: float
    nll: float
    eval_seconds: float
    eval_windows: int
    eval_tokens: int


@dataclass(frozen=True)
class TextPerplexity:
    """Perplexity on the user's own text (``--eval-data``), by the WikiText-2 test protocol."""
    source: str
    perplexity: Perplexity

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, **vars(self.perplexity)}


def _extras(out: dict[str, Any], eval_data: TextPerplexity | None, zero_shot: dict | None) -> None:
    """Keys that exist only when asked for (--eval-data, --tasks): older records stay key for key."""
    if eval_data is not None:
        out["eval_data"] = eval_data.to_dict()
    if zero_shot is not None:
        out["zero_shot"] = zero_shot


@dataclass(frozen=True)
class PruneResult:
    model: str
    model_source: str
    input: str
    name: str | None
    formula: str
    pretty: str
    latex: str
    text: str
    canonical: str
    type: str
    requires: list[str]
    target_sparsity: float
    sparsity: float
    pattern: str                        # "unstructured" or "N:M"
    group: str
    reconstruct: bool
    within_block: str                   # "sequential" or "parallel" (runtime/capture.py)
    placement: dict[str, Any]           # device, dtype, offload, calib_batch (runtime/device.py)
    calibration: Calibration
    layers: list[dict[str, Any]]
    load_seconds: float
    prune_seconds: float
    allocation: dict[str, Any] | None   # the plan, with realized_block_sparsity
    allocation_seconds: float | None
    seqlen: int
    torch: str
    python: str
    evaluation: Perplexity | None = None
    eval_data: TextPerplexity | None = None
    zero_shot: dict[str, Any] | None = None  # runtime/tasks.ZeroShot.to_dict()
    output: str | None = None           # where the model was saved (not in pruning.json itself)

    @property
    def ppl(self) -> float | None:
        return self.evaluation.ppl if self.evaluation else None

    def settings_rows(self) -> list[list[str]]:
        """How the pruning ran, as (name, value) rows: the terminal summary and the model card."""
        return [["pattern", self.pattern], ["group", self.group],
                ["reconstruct", "SparseGPT's OBS weight update on the kept weights" if self.reconstruct else "no"],
                ["within-block order", self.within_block],
                ["calibration", self.calibration.describe()]]

    def to_dict(self) -> dict[str, Any]:
        """The record, key for key as prunedsl has always written it."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("evaluation", "eval_data", "zero_shot", "output"):
                continue
            if f.name == "seqlen":  # the evaluation's keys sat before seqlen, None when not evaluated
                ev = self.evaluation
                out.update(ppl=ev.ppl if ev else None, eval_seconds=ev.eval_seconds if ev else None,
                           eval_windows=ev.eval_windows if ev else None)
            value = getattr(self, f.name)
            out[f.name] = vars(value).copy() if isinstance(value, Calibration) else value
        if self.evaluation:
            out.update(nll=self.evaluation.nll, eval_tokens=self.evaluation.eval_tokens)
        _extras(out, self.eval_data, self.zero_shot)
        if self.output is not None:
            out["output"] = self.output
        return out


@dataclass(frozen=True)
class EvalResult:
    model: str
    model_source: str
    seqlen: int
    load_seconds: float
    evaluation: Perplexity
    settings_from: str | None = None    # the pruning.json whose seqlen / windows were used
    eval_data: TextPerplexity | None = None
    zero_shot: dict[str, Any] | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def ppl(self) -> float:
        return self.evaluation.ppl

    @property
    def windows(self) -> int:
        return self.evaluation.eval_windows

    def to_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "model_source": self.model_source, "seqlen": self.seqlen,
               "windows": self.windows, "load_seconds": self.load_seconds, **vars(self.evaluation)}
        if self.settings_from is not None:
            out["settings_from"] = self.settings_from
        _extras(out, self.eval_data, self.zero_shot)
        return out
