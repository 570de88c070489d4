"""Score coupled structures on the dense model (STRUCTURES_CONTRACT.md).

One pass over the blocks (``run_blocks`` with the one statistics cache, ``statcache.py``: the
same per-layer statistics every per-weight metric gets) collects the member layers' statistics; a forward hook on each block
measures its block influence 1 - mean_tokens cos(x_in, x_out) (ShortGPT) when the score
``requires`` it. Then ``score_fn(members, block)`` is called once per decoder block and gives
one score per structure (higher = keep). Nothing is changed in the model.

The reference score_fns below (``REFERENCE_SCORES``) are plain Python; the structure-score
language will provide compiled ones with the same signature.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import PruneRuntimeError
from .capture import run_blocks
from .gradients import gradient_norms
from .microbatch import inspecting
from .models import find_blocks
from .statcache import StatsCache, layer_stats
from .stats import check_requires
from .structures import Member, StructureGroup

BLOCK_STATISTICS = frozenset({"block_influence"})

# score_fn(members, block statistics) -> (n_struct,) scores, higher = keep
ScoreFn = Callable[[Sequence[Member], Mapping[str, torch.Tensor]], torch.Tensor]


@contextlib.contextmanager
def block_influence_hooks(model: nn.Module) -> Iterator[list[list[float]]]:
    """Accumulate per block [Σ_tokens cos(x_in, x_out), tokens] over every real block call.

    A call whose output *is* its input (the capture pass's recorder) is skipped, so this
    works with any number of replays per block (e.g. micro-batches); so are calls with
    gradients enabled (the backward passes collecting G run the blocks too) and the
    micro-batched pass's probe of the block's call order (``microbatch.inspecting``).
    """
    blocks, _ = find_blocks(model)
    sums: list[list[float]] = [[0.0, 0.0] for _ in blocks]

    def hook(i: int):
        def fn(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            x_in = args[0] if args else kwargs.get("hidden_states")
            x_out = out[0] if isinstance(out, (tuple, list)) else out
            if x_in is None or x_out is x_in or not isinstance(x_out, torch.Tensor) \
                    or torch.is_grad_enabled() or inspecting():  # the G pass's forwards, and the
                return                                           # micro-batch stage probe, are not it
            cos = torch.nn.functional.cosine_similarity(x_in.float(), x_out.float(), dim=-1)
            sums[i][0] += float(cos.sum())
            sums[i][1] += cos.numel()
        return fn

    handles = [b.register_forward_hook(hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
    try:
        yield sums
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class DenseStatistics:
    layers: dict[str, dict[str, Any]]            # {layer name: layer_stats}
    blocks: list[dict[str, torch.Tensor]]        # per block: {"block_influence": 0-d}


def collect_dense(model: nn.Module, calib_ids: torch.Tensor, requires: frozenset[str], *,
                  progress: bool = False, calib_batch: int | None = None) -> DenseStatistics:
    """Member statistics and block statistics of the dense model over ``calib_ids``, computed
    where the model is; calib_batch: micro-batches of that many windows (``capture.run_blocks``)."""
    layer_requires = frozenset(requires) - BLOCK_STATISTICS
    with block_influence_hooks(model) as sums:
        layers = _layer_statistics(model, calib_ids, layer_requires, progress=progress,
                                   calib_batch=calib_batch)
    blocks = []
    for i, (cos_sum, n) in enumerate(sums):
        if "block_influence" in requires and n == 0:
            raise PruneRuntimeError(f"decoder block {i} was never run: no block influence")
        stats = {"block_influence": torch.tensor(1.0 - cos_sum / n, dtype=torch.float32)} if n else {}
        blocks.append(stats)
    return DenseStatistics(layers, blocks)


def _layer_statistics(model: nn.Module, calib_ids: torch.Tensor, requires: frozenset[str], *,
                      progress: bool, calib_batch: int | None = None) -> dict[str, dict[str, Any]]:
    """Dense-model statistics of every block linear (``W`` is the live weight, not a copy);
    layers sharing an input share the same statistic tensors."""
    check_requires(requires)
    grads = gradient_norms(model, calib_ids, progress=progress) if "G" in requires else {}
    cache = StatsCache(requires)
    out: dict[str, dict[str, Any]] = {}

    def on_linear(i: int, name: str, layer: nn.Linear, x: torch.Tensor) -> None:
        out[name] = layer_stats(name, layer, cache.get(i, x), grads)

    run_blocks(model, calib_ids, on_linear, progress=progress, desc="structure statistics",
               calib_batch=calib_batch, stats=cache)
    return out


def score_structures(groups: Sequence[StructureGroup], dense: DenseStatistics,
                     score_fn: ScoreFn) -> list[torch.Tensor]:
    """Call ``score_fn`` once per block; returns one (n_struct,) float tensor per group."""
    out = []
    for g in groups:
        members = []
        for spec in g.members:
            if spec.name not in dense.layers:
                raise PruneRuntimeError(f"no statistics for {spec.name}: no calibration token reached it")
            members.append(Member(spec.name, spec.role, dense.layers[spec.name], spec.index))
        scores = torch.as_tensor(score_fn(members, dense.blocks[g.block])).detach().float().reshape(-1)
        if scores.numel() != g.count:
            raise PruneRuntimeError(f"block {g.block}: the structure score gave {scores.numel()} "
                                    f"values, expected {g.count}")
        out.append(scores)
    return out


# --- reference score_fns (plain Python; the language branch compiles formulas to these) ---

def _reduce(member: Member, per_weight: torch.Tensor) -> torch.Tensor:
    """Sum a member's per-weight scores over each structure's owned rows/columns → (n_struct,)."""
    if member.role == "whole":
        return per_weight.sum().reshape(1)
    if member.role == "producer":
        per_unit = per_weight.sum(1)      # (out,)
    elif member.role == "consumer":
        per_unit = per_weight.sum(0)      # (in,)
    else:
        raise PruneRuntimeError(f"unknown member role {member.role!r}")
    return per_unit[member.index].sum(1)  # (n_struct,)


def _summed(per_weight: Callable[[Mapping[str, Any]], torch.Tensor]) -> ScoreFn:
    def score(members: Sequence[Member], block: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([_reduce(m, per_weight(m.stats)) for m in members]).sum(0)
    return score


def _block_influence(members: Sequence[Member], block: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return block["block_influence"].reshape(1)


@dataclass(frozen=True)
class ReferenceScore:
    name: str
    fn: ScoreFn
    requires: frozenset[str]
    kinds: frozenset[str]
    doc: str
    latex: str | None = None     # the formula in LaTeX (language scores; the model card shows it)


REFERENCE_SCORES: dict[str, ReferenceScore] = {s.name: s for s in (
    ReferenceScore("magnitude", _summed(lambda s: s["W"].abs()), frozenset({"W"}),
                   frozenset({"channels", "heads", "blocks"}), "Σ_members Σ_owned |W|"),
    ReferenceScore("taylor", _summed(lambda s: (s["W"] * s["G"]).abs()), frozenset({"W", "G"}),
                   frozenset({"channels", "heads", "blocks"}),
                   "LLM-Pruner's first-order Taylor: Σ_members Σ_owned |W·G|"),
    ReferenceScore("wanda_sp", _summed(lambda s: s["W"].abs() * s["x_norm2"]),
                   frozenset({"W", "x_norm2"}), frozenset({"channels", "heads", "blocks"}),
                   "Wanda-sp: Σ_members Σ_owned |W|·‖X‖"),
    ReferenceScore("block_influence", _block_influence, frozenset({"block_influence"}),
                   frozenset({"blocks"}), "ShortGPT: 1 - mean cos(x_in, x_out) of the block"),
)}


def language_score(text: str, kind: str, library=None) -> ReferenceScore:
    """A structure score written in the language (a library name such as ``taylor`` or
    ``shortgpt``, or a formula such as ``group_sum(|W| * ‖X‖)``), checked for ``kind`` and
    compiled; the reference scores above are the tests' oracle for the library entries."""
    from ..api import parse_structure_metric
    from ..dsl.library import BUILTIN
    sm = parse_structure_metric(text, library=library or BUILTIN, kind=kind)
    compiled = sm.compile()

    def fn(members: Sequence[Member], block: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return compiled(members, block)
    return ReferenceScore(sm.name or text, fn, frozenset(sm.requires), frozenset(sm.kinds), sm.pretty(),
                          sm.latex())


def reference_score(name: str, kind: str) -> ReferenceScore:
    """A reference score by name, checked against the structure kind."""
    from ..errors import ConfigError
    if name not in REFERENCE_SCORES:
        raise ConfigError("unknown {structure_metric} {value!r}; choose one of {choices}",
                          value=name, choices=", ".join(REFERENCE_SCORES))
    score = REFERENCE_SCORES[name]
    if kind not in score.kinds:
        raise ConfigError("{structure_metric} {value} scores {kinds} only, not {kind}", value=name,
                          kinds=", ".join(sorted(score.kinds)), kind=kind)
    return score
