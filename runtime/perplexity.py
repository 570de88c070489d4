"""Perplexity on non-overlapping windows (docs/design.md §5).

Mean token NLL over every predicted token (seqlen - 1 per window), ppl = exp(mean).
Per-batch NLL sums are added in float64, so the result barely depends on the batch size.
The per-window NLL sums come back too (``window_nll_sums``): what a bootstrap over
windows resamples (``runtime/fidelity.py``). With one window per batch (the default)
each is the very float that was added to the total, so their sum, taken in order, is
the total.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PruneRuntimeError
from .data import eval_windows
from .device import Placement, model_placement
from .models import find_blocks
from .progress import progress_bar

# Measured on a 2-core CPU, SmolLM2-135M, 16 windows of 512 tokens: batch 1: 17.1 s,
# 2: 17.6 s, 4: 18.5 s, 8: 22.2 s. One window already keeps both cores busy, and each
# extra window costs ~0.2 GB of float32 logits (vocab 49152), so the default is 1.
DEFAULT_BATCH_SIZE = 1


@torch.no_grad()
def perplexity(model: nn.Module, ids: torch.Tensor, seqlen: int = 512,
               max_windows: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
               progress: bool = True, placement: Placement | None = None) -> dict[str, Any]:
    """Perplexity of ``model`` on token ids (1, N): dict(ppl, nll, windows, tokens, seconds,
    window_nll_sums), the last a list of each window's NLL sum over its seqlen - 1 tokens.

    placement: where to compute (default: where the model is); with offload each block is
    onloaded for its part of every forward."""
    windows = eval_windows(ids, seqlen, max_windows)  # (n, seqlen)
    placement = placement or model_placement(model)
    streamed = placement.streamed(model, find_blocks(model)[0]) if placement.offload else contextlib.nullcontext()
    start = time.perf_counter()
    total_nll = 0.0
    tokens = 0
    window_sums: list[float] = []
    bar = progress_bar(total=windows.shape[0], desc="perplexity", unit="win", progress=progress)
    with bar, streamed:
        for i in range(0, windows.shape[0], max(1, batch_size)):
            batch = placement.to_device(windows[i: i + batch_size])  # (b, seqlen)
            logits = model(input_ids=batch, use_cache=False).logits  # (b, seqlen, vocab)
            vocab = logits.shape[-1]
            nll = F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(),
                                  batch[:, 1:].reshape(-1), reduction="sum")
            total_nll += float(nll)  # the total's order is the one before per-window sums existed
            if batch.shape[0] == 1:
                window_sums.append(float(nll))
            else:  # float64 sums per window; their total may differ from nll in the last bits
                per_token = F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(),
                                            batch[:, 1:].reshape(-1), reduction="none")
                window_sums += per_token.double().view(batch.shape[0], -1).sum(1).tolist()
            tokens += batch[:, 1:].numel()
            bar.update(batch.shape[0])
    mean = total_nll / tokens
    if math.isnan(mean):
        raise PruneRuntimeError(
            f"perplexity is NaN over {windows.shape[0]} windows",
            hint="the pruned model produces NaN/inf logits; check the metric or lower the sparsity")
    ppl = math.exp(mean) if mean < 700 else math.inf  # exp overflows a float past ~709
    return {"ppl": ppl, "nll": mean, "windows": int(windows.shape[0]),
            "tokens": tokens, "seconds": time.perf_counter() - start, "window_nll_sums": window_sums}
