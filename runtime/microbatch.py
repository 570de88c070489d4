"""Block passes over micro-batches of the calibration windows (``--calib-batch B``).

The single-batch pass (``capture.run_blocks``) runs a block once over all windows and
prunes each linear in a pre-hook, on its whole input. Here no layer input ever exists
whole; a block's linears are split into **stages**, maximal runs of consecutive calls
that share one input tensor (q/k/v, o, gate/up, down in a Llama block), found by one run
of the block on the first micro-batch. Then, per block:

- ``within_block="sequential"`` (each linear sees the pruned layers before it): for each
  stage, the block runs on every micro-batch *up to* the stage's first linear (a
  pre-hook feeds its input to an ``InputAccumulator`` and stops the forward), then the
  callback decides every linear of the stage on the accumulated statistics. Stages
  before it are pruned by then, so each input is exactly the single pass's.
- ``within_block="parallel"``: one full run over the micro-batches accumulates every
  stage's input of the unpruned block; then every linear is decided.

Finally one more run per micro-batch gives the next block its (pruned) inputs, replacing
that micro-batch's input in place. Cost: about (stages + 1) / 2 + 1 forwards of a block
instead of one (sequential), 2 (parallel); memory: the hidden states of all windows once
(windows × seqlen × hidden; the single pass holds a block's input and output) plus one
micro-batch's activations (attention, MLP intermediate), whatever the number of windows. Results equal the single pass's up to float rounding of the sums
(the statistics add per-micro-batch sums instead of one sum over all tokens).

Capture runs per micro-batch too, so recorded arguments (masks, position tables) have
the micro-batch's size. Linears the first micro-batch does not reach (e.g. unused
experts) are reported as not run.
"""
from __future__ import annotations

import contextvars
import time
from typing import Any

import torch
from torch import nn

from ..errors import PruneRuntimeError
from .capture import BlockCall, LinearCallback, capture_inputs, replay
from .device import Placement
from .models import linear_layers
from .progress import progress_bar


_INSPECTING = contextvars.ContextVar("prunedsl_inspecting_block", default=False)


def inspecting() -> bool:
    """True during ``find_stages``'s run of a block, which only records the linears' call
    order: hooks that measure the block's output (block influence) skip it, or the first
    micro-batch would count twice."""
    return _INSPECTING.get()


class _StopBlock(Exception):
    """The stage's input has been seen: the rest of the block is not needed."""


def micro_batches(ids: torch.Tensor, size: int | None) -> list[torch.Tensor]:
    """``ids`` (n, seqlen) cut into consecutive micro-batches of ``size`` windows."""
    if size is None or size >= ids.shape[0]:
        return [ids]
    return list(ids.split(size))


def find_stages(block: nn.Module, names: dict[str, nn.Linear], hidden: torch.Tensor,
                call: BlockCall) -> list[list[str]]:
    """Linears in call order, grouped into runs that share one input tensor (identity)."""
    order: list[tuple[str, torch.Tensor]] = []
    handles = [layer.register_forward_pre_hook(_recorder(name, order), with_kwargs=True)
               for name, layer in names.items()]
    token = _INSPECTING.set(True)
    try:
        replay(block, hidden, call)
    finally:
        _INSPECTING.reset(token)
        for h in handles:
            h.remove()
    stages: list[list[str]] = []
    previous = None
    for name, x in order:
        if stages and x is previous:
            stages[-1].append(name)
        else:
            stages.append([name])
        previous = x
    return stages


def _recorder(name: str, order: list) -> Any:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if all(n != name for n, _ in order):  # a layer called twice in one block counts once
            order.append((name, args[0] if args else kwargs["input"]))
    return hook


def _feeder(acc, stop: bool) -> Any:
    fed = [False]

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if fed[0]:
            return
        fed[0] = True
        acc.add(args[0] if args else kwargs["input"])
        if stop:
            raise _StopBlock
    return hook, fed


def _accumulate(block: nn.Module, layers: dict[str, nn.Linear], accs: dict[str, Any],
                hidden: list[torch.Tensor], calls: list[BlockCall], *, stop: bool) -> None:
    """Run ``block`` on every micro-batch, feeding each named layer's input to its
    accumulator; ``stop``: end each run at that (single) layer."""
    for h, call in zip(hidden, calls):
        handles = []
        try:
            for name, acc in accs.items():
                hook, _ = _feeder(acc, stop)
                handles.append(layers[name].register_forward_pre_hook(hook, with_kwargs=True))
            try:
                replay(block, h, call)
            except _StopBlock:
                pass
        finally:
            for handle in handles:
                handle.remove()


@torch.no_grad()
def run_micro_batched(model: nn.Module, ids: torch.Tensor, on_linear: LinearCallback,
                      calib_batch: int, stats, *, progress: bool, desc: str, within_block: str,
                      placement: Placement) -> dict[str, Any]:
    """``capture.run_blocks`` over micro-batches; see the module docstring."""
    if stats is None:
        raise PruneRuntimeError("micro-batched calibration needs the statistics cache to accumulate "
                                "(run_blocks(..., stats=StatsCache(...)))")
    t0 = time.perf_counter()
    caps = [capture_inputs(model, chunk, placement) for chunk in micro_batches(ids, calib_batch)]
    t1 = time.perf_counter()
    blocks, prefix = caps[0].blocks, caps[0].prefix
    hidden = [cap.hidden for cap in caps]
    for cap in caps:
        cap.hidden = None  # the list above holds the only reference, replaced block by block
    not_run: list[str] = []
    bar = progress_bar(blocks, desc=desc, unit="block", progress=progress)
    for i, block in enumerate(bar):
        names = {f"{prefix}.{i}.{local}": layer for local, layer in linear_layers(block).items()}
        calls = [cap.calls[i] for cap in caps]
        with placement.onloaded(block):
            stages = find_stages(block, names, hidden[0], calls[0])
            if within_block == "sequential":
                for stage in stages:  # the stages before it are pruned already
                    acc = stats.accumulator()
                    _accumulate(block, names, {stage[0]: acc}, hidden, calls, stop=True)
                    for name in stage:
                        on_linear(i, name, names[name], acc)
            else:
                accs = {stage[0]: stats.accumulator() for stage in stages}
                _accumulate(block, names, accs, hidden, calls, stop=False)
                for stage in stages:
                    for name in stage:
                        on_linear(i, name, names[name], accs[stage[0]])
            for c, call in enumerate(calls):  # in place: one micro-batch's input and output at a time
                hidden[c] = replay(block, hidden[c], call)
        seen = {name for stage in stages for name in stage}
        not_run += [name for name in names if name not in seen]
    # "outputs": the last block's output per micro-batch (not concatenated: no second copy)
    return {"capture_seconds": t1 - t0, "blocks_seconds": time.perf_counter() - t1,
            "not_run": not_run, "output": None, "outputs": hidden}
