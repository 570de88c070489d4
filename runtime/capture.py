"""Capture the decoder blocks' inputs once, then run the blocks one at a time.

``capture_inputs`` runs the model once over the calibration batch with ``use_cache=False``
while every block's ``forward`` is temporarily replaced by a recorder: it stores the
block's positional and keyword arguments (position embeddings, attention mask, ...
which can differ per block, e.g. Gemma-3's sliding vs full attention layers) and returns
the hidden states unchanged; the last block's recorder stops the forward, so the LM
head never runs. Only block 0's hidden input is kept; later blocks get the outputs of
the blocks before them from ``run_blocks``.

``run_blocks`` replays each block once over the whole batch with a forward pre-hook on
each of its nn.Linear layers, so a callback sees every layer's input just before the
layer runs (and may change the layer's weight, which the layer then uses).
With ``within_block="parallel"`` each block runs twice instead: once unchanged, recording
every linear's input, then the callback sees each layer with its *unpruned* block input
(as Wanda's, OWL's and llm-compressor's code score a block), then once more to give the
next block the outputs of the (now pruned) block.

``calib_batch=B`` (fewer than the calibration windows) runs the same passes over
micro-batches of B windows (``microbatch.py``): statistics accumulate across them, so
peak activation memory no longer grows with the number of windows. ``placement`` (see
``device.py``) says where blocks compute and whether each is onloaded for its pass.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import PruneRuntimeError
from .device import Placement, model_placement
from .models import find_blocks, linear_layers
from .progress import progress_bar

# Keyword arguments that carry a KV cache: never replayed (see docs/design.md §2).
_CACHE_KWARGS = frozenset({"cache", "past_key_values", "past_key_value", "layer_past"})
_MISSING = object()

# callback(block index, full layer name, layer, layer input (..., in) as passed)
LinearCallback = Callable[[int, str, nn.Linear, torch.Tensor], None]


class _StopForward(Exception):
    """Raised by the last block's recorder: the rest of the model is not needed."""


@dataclass
class BlockCall:
    """How the model called one block, minus its hidden-state input."""

    args: tuple[Any, ...]          # positional arguments after the hidden states
    kwargs: dict[str, Any]         # keyword arguments, cache objects removed
    hidden_as_kwarg: bool = False  # hidden states came as hidden_states=...


@dataclass
class Captured:
    blocks: nn.ModuleList
    prefix: str                    # dotted path of the blocks, e.g. "model.layers"
    hidden: torch.Tensor           # block 0's input (batch, seqlen, hidden)
    calls: list[BlockCall] = field(default_factory=list)


@contextlib.contextmanager
def patched_forwards(blocks: nn.ModuleList, make: Callable[[int, Callable], Callable]) -> Iterator[None]:
    """Replace each block's forward by ``make(i, its forward)`` (an instance attribute
    shadows the class's forward) and restore what was there on exit."""
    saved = [block.__dict__.get("forward", _MISSING) for block in blocks]
    try:
        for i, block in enumerate(blocks):
            block.forward = make(i, block.forward)
        yield
    finally:
        for block, old in zip(blocks, saved):
            if old is _MISSING:
                block.__dict__.pop("forward", None)
            else:
                block.forward = old


def _is_cache(value: Any) -> bool:
    return any(cls.__name__.endswith("Cache") for cls in type(value).__mro__)


def _clean_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in kwargs.items() if k not in _CACHE_KWARGS and not _is_cache(v)}
    if "use_cache" in out:
        out["use_cache"] = False
    return out


@torch.no_grad()
def capture_inputs(model: nn.Module, ids: torch.Tensor, placement: Placement | None = None) -> Captured:
    """One model forward over ``ids`` (batch, seqlen) recording every block's call.

    placement: where to compute (default: where the model's weights are); with offload,
    the embeddings and the rest outside the blocks are onloaded for this forward."""
    placement = placement or model_placement(model)
    blocks, prefix = find_blocks(model)
    calls: list[BlockCall | None] = [None] * len(blocks)
    first: list[torch.Tensor] = []

    def recorder(i: int):
        def forward(*args: Any, **kwargs: Any) -> Any:
            as_kwarg = not args
            hidden = kwargs.pop("hidden_states") if as_kwarg else args[0]
            if i == 0:
                first.append(hidden)
            calls[i] = BlockCall(tuple(args[1:]), _clean_kwargs(kwargs), as_kwarg)
            if i == len(blocks) - 1:
                raise _StopForward
            return hidden  # transformers 5.x decoder layers return the hidden states
        return forward

    with patched_forwards(blocks, lambda i, _: recorder(i)), \
            placement.outside_blocks_onloaded(model, blocks):
        try:
            model(input_ids=placement.to_device(ids), use_cache=False)
        except _StopForward:
            pass
    missing = [i for i, c in enumerate(calls) if c is None]
    if missing or not first:
        raise PruneRuntimeError(
            f"blocks {missing} of {prefix} were not called during the capture forward",
            hint="the model's forward does not run every decoder block once")
    return Captured(blocks, prefix, first[0], calls)  # type: ignore[arg-type]


def replay(block: nn.Module, hidden: torch.Tensor, call: BlockCall) -> torch.Tensor:
    """Run one block on ``hidden`` with its recorded arguments; return its hidden output."""
    if call.hidden_as_kwarg:
        out = block(*call.args, hidden_states=hidden, **call.kwargs)
    else:
        out = block(hidden, *call.args, **call.kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


WITHIN_BLOCK = ("sequential", "parallel")


@torch.no_grad()
def run_blocks(model: nn.Module, ids: torch.Tensor, on_linear: LinearCallback, *,
               progress: bool = True, desc: str = "blocks",
               within_block: str = "sequential", placement: Placement | None = None,
               calib_batch: int | None = None, stats=None) -> dict[str, Any]:
    """Capture, then run each block once with ``on_linear`` called before each linear
    (``within_block="parallel"``: after a dense run of the block, on its recorded inputs).

    calib_batch: micro-batches of this many windows (None or ≥ the batch: one batch);
    then ``stats`` (a ``statcache.StatsCache``) says what to accumulate, and ``on_linear``
    gets an ``InputAccumulator`` instead of the input tensor (``stats.get`` reads both).
    Returns timings and the names of linear layers that never ran (e.g. unused experts).
    """
    if within_block not in WITHIN_BLOCK:
        raise PruneRuntimeError(f"unknown within-block order {within_block!r}; expected one of {WITHIN_BLOCK}")
    placement = placement or model_placement(model)
    if calib_batch is not None and calib_batch < 1:
        raise PruneRuntimeError(f"the calibration micro-batch must be at least 1 window, got {calib_batch}")
    if calib_batch is not None and calib_batch < ids.shape[0]:
        from .microbatch import run_micro_batched
        return run_micro_batched(model, ids, on_linear, calib_batch, stats, progress=progress,
                                 desc=desc, within_block=within_block, placement=placement)
    t0 = time.perf_counter()
    cap = capture_inputs(model, ids, placement)
    t1 = time.perf_counter()
    hidden = cap.hidden
    not_run: list[str] = []
    bar = progress_bar(cap.blocks, desc=desc, unit="block", progress=progress)
    for i, block in enumerate(bar):
        names = {f"{cap.prefix}.{i}.{local}": layer for local, layer in linear_layers(block).items()}
        ran: set[str] = set()
        seen: list[tuple[int, str, nn.Linear, torch.Tensor]] = []
        callback = on_linear if within_block == "sequential" else lambda *a: seen.append(a)
        handles = [layer.register_forward_pre_hook(_hook(callback, i, name, ran), with_kwargs=True)
                   for name, layer in names.items()]
        with placement.onloaded(block):
            try:
                out = replay(block, hidden, cap.calls[i])
            finally:
                for h in handles:
                    h.remove()
            if within_block == "parallel":  # every linear decided on the unpruned block input
                for args in seen:
                    on_linear(*args)
                del seen, out
                out = replay(block, hidden, cap.calls[i])
        hidden = out
        not_run += [name for name in names if name not in ran]
    return {"capture_seconds": t1 - t0, "blocks_seconds": time.perf_counter() - t1,
            "not_run": not_run, "output": hidden}


def _hook(on_linear: LinearCallback, i: int, name: str, ran: set[str]) -> Callable[..., None]:
    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if name in ran:  # a layer called twice in one block is handled once
            return
        ran.add(name)
        # the input as the layer gets it (…, in): its identity tells shared inputs apart
        on_linear(i, name, module, args[0] if args else kwargs["input"])
    return pre_hook
