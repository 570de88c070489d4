"""The ``G`` statistic: per-weight L2 norm over calibration samples of dloss/dW.

G[name] = sqrt(Σ_s (∂L_s/∂W)²), L_s the mean next-token cross-entropy of calibration window
s (batch size 1), as GBLM-Pruner and Pruner-Zero collect it (they also multiply the
gradients by 100, which only rescales G). It is computed once, on the dense model, before
the sequential pruning pass, for the decoder-block linears only; the model stays in eval
mode (no dropout), and only those weights require gradients.

Cost, per calibration window: one forward and one backward of the whole model, plus one
more forward of each block when checkpointing (the default): about 4 forwards, so
``nsamples`` windows cost about as much as 4·nsamples windows of perplexity evaluation
(SmolLM2-135M, 512 tokens, 2 CPU cores: see the README's benchmark for the measured time).
Memory: with ``checkpoint=True`` each block keeps only its input for the backward and
recomputes its activations then, so one block's activations are alive at a time instead of
the whole model's; each weight gradient is folded into the running sum of squares as soon
as it is ready and freed (``register_post_accumulate_grad_hook``), so the gradients of all
layers never exist at once either. Extra memory: one float32 copy of the block linears (the
sums) and the LM head's logits for one window. The sums are float32 whatever the model's
dtype. With block offloading (``Placement.offload``) the backward runs where the model
lives (CPU): onloading blocks inside a backward is not supported.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from .capture import patched_forwards
from .device import Placement, model_placement
from .models import find_blocks, linear_layers
from .progress import progress_bar


def _checkpointed(blocks: nn.ModuleList):
    """Run every block under activation checkpointing (instance ``forward`` wrappers)."""
    def wrap(_: int, fn):
        def forward(*args: Any, **kwargs: Any) -> Any:
            return _checkpoint(fn, *args, use_reentrant=False, **kwargs)
        return forward
    return patched_forwards(blocks, wrap)


def gradient_norms(model: nn.Module, ids: torch.Tensor, *, progress: bool = True,
                   checkpoint: bool = True, placement: Placement | None = None) -> dict[str, torch.Tensor]:
    """{layer name: sqrt(Σ_samples (dloss_s/dW)²)} float32 (out, in) for every block linear.

    ids: (nsamples, seqlen) calibration windows, one backward pass each.
    """
    blocks, prefix = find_blocks(model)
    layers = {f"{prefix}.{i}.{n}": m for i, b in enumerate(blocks) for n, m in linear_layers(b).items()}
    sq = {name: torch.zeros_like(m.weight, dtype=torch.float32) for name, m in layers.items()}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    placement = placement or model_placement(model)

    def fold(name: str):
        def hook(p: torch.Tensor) -> None:
            sq[name].add_(p.grad.float().square())
            p.grad = None  # freed now, not at the end of the backward
        return hook

    handles = []
    try:
        for p, _ in saved:  # gradients only for the weights we score
            p.requires_grad_(False)
        for name, m in layers.items():
            m.weight.requires_grad_(True)
            handles.append(m.weight.register_post_accumulate_grad_hook(fold(name)))
        ctx = _checkpointed(blocks) if checkpoint else contextlib.nullcontext()
        with ctx, torch.enable_grad():
            for row in progress_bar(ids, desc="gradients", unit="sample", progress=progress):
                sample = placement.to_home(row.unsqueeze(0))  # (1, seqlen)
                loss = model(input_ids=sample, labels=sample, use_cache=False).loss
                loss.backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        for p, flag in saved:
            p.requires_grad_(flag)
    return {name: s.sqrt_() for name, s in sq.items()}
