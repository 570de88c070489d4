"""Real speed of a model on this machine: prefill tokens/s and greedy decode tokens/s.

    from prunedsl.runtime.speed import measure_speed
    measure_speed(model, ids512, prompt, new_tokens=64, reps=3)
    # {"prefill_tok_s": ..., "decode_tok_s": ...}

Prefill: one forward of (1, n) tokens without a cache. Decode: greedy ``generate`` of exactly
``new_tokens`` tokens from ``prompt`` with the KV cache. ``load_model`` turns the cache off
in the config and the generation config (statistics passes must not share one), so both
are switched on for the timing and put back after; a forward hook checks that every decode
step after the prompt really ran on one new token (a silently disabled cache makes decode
quadratic and ~10× slower). Each number is the median of ``reps`` runs after one warm-up.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Iterator

import torch
from torch import nn

from ..errors import PruneRuntimeError


@contextlib.contextmanager
def cache_on(model: nn.Module) -> Iterator[None]:
    """use_cache=True on the config and the generation config for the block; restored after."""
    saved = []
    for cfg in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        if cfg is not None and hasattr(cfg, "use_cache"):
            saved.append((cfg, cfg.use_cache))
            cfg.use_cache = True
    try:
        yield
    finally:
        for cfg, value in saved:
            cfg.use_cache = value


def _median_seconds(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(max(1, reps)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def greedy_decode(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> list[int]:
    """Greedy ``generate`` of exactly ``new_tokens`` tokens with the KV cache; returns the
    tokens per forward call (prompt length, then 1 per step), checked."""
    seen: list[int] = []

    def hook(module, args, kwargs):
        x = kwargs.get("input_ids")
        x = kwargs.get("inputs_embeds") if x is None else x
        if x is None and args:
            x = args[0]
        seen.append(int(x.shape[1]))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with cache_on(model):
            model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False, use_cache=True, pad_token_id=0)
    finally:
        handle.remove()
    if any(n != 1 for n in seen[1:]):
        raise PruneRuntimeError(f"greedy decoding did not use the KV cache (tokens per step: {seen[:5]}…)")
    return seen


@torch.no_grad()
def measure_speed(model: nn.Module, ids: torch.Tensor, prompt: torch.Tensor, *, new_tokens: int = 64,
                  reps: int = 3) -> dict[str, float]:
    """prefill_tok_s on ``ids`` (1, n) and decode_tok_s for ``new_tokens`` from ``prompt`` (1, p)."""
    prefill = _median_seconds(lambda: model(input_ids=ids, use_cache=False), reps)
    decode = _median_seconds(lambda: greedy_decode(model, prompt, new_tokens), reps)
    return {"prefill_tok_s": ids.shape[1] / prefill, "decode_tok_s": new_tokens / decode,
            "prefill_tokens": int(ids.shape[1]), "decode_tokens": new_tokens,
            "torch_threads": torch.get_num_threads()}


@torch.no_grad()
def paired_speed(models: dict[str, nn.Module], ids: torch.Tensor, prompt: torch.Tensor, *,
                 new_tokens: int = 64, reps: int = 3) -> dict[str, dict[str, float]]:
    """``measure_speed`` of several models with the runs interleaved (a, b, a, b, …), so machine
    load that drifts during the measurement hits every model alike; medians per model."""
    for m in models.values():  # warm-up
        m(input_ids=ids, use_cache=False)
        greedy_decode(m, prompt, new_tokens)
    times: dict[str, dict[str, list[float]]] = {k: {"prefill": [], "decode": []} for k in models}
    for _ in range(max(1, reps)):
        for name, m in models.items():
            t = time.perf_counter()
            m(input_ids=ids, use_cache=False)
            times[name]["prefill"].append(time.perf_counter() - t)
            t = time.perf_counter()
            greedy_decode(m, prompt, new_tokens)
            times[name]["decode"].append(time.perf_counter() - t)
    return {name: {"prefill_tok_s": ids.shape[1] / statistics.median(t["prefill"]),
                   "decode_tok_s": new_tokens / statistics.median(t["decode"]),
                   "prefill_tokens": int(ids.shape[1]), "decode_tokens": new_tokens,
                   "torch_threads": torch.get_num_threads()} for name, t in times.items()}
