"""Pruning settings as values: comparison group, N:M pattern and sparsity, resolved and
checked in one place (no torch, so the CLI and the search use it before loading anything).

Errors are ``ConfigError``: their message names a setting plainly (``sparsity``); the
command line re-spells it as a flag (``--sparsity``) with ``ConfigError.for_cli``.
"""
from __future__ import annotations

import re

from .errors import ConfigError

GROUPS = ("row", "layer", "global")  # per output row, per layer, one threshold over all layers


def check_group(group: str) -> str:
    if group not in GROUPS:
        raise ConfigError("unknown comparison group {value!r}; choose one of {choices}",
                          value=group, choices=", ".join(GROUPS))
    return group


def default_group(group: str | None, reconstruct: bool) -> str:
    """The comparison group a job uses: Wanda's per-row default, or with ``reconstruct``
    SparseGPT's own selection (one threshold over all rows of each 128-column block)."""
    if group is not None:
        return group
    return "layer" if reconstruct else "row"


def parse_pattern(text: str | None) -> tuple[int, int] | None:
    """``unstructured`` → None; ``2:4`` → (2, 4) (N of every M weights pruned)."""
    if text is None or text == "unstructured":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not match:
        raise ConfigError("pattern {value!r} is neither 'unstructured' nor N:M", value=text,
                          hint="e.g. 2:4 or 4:8")
    n, m = int(match[1]), int(match[2])
    if not 0 < n < m:
        raise ConfigError("pattern {value}: need 0 < N < M (N of every M weights are pruned)", value=text)
    return n, m


def pattern_text(pattern: tuple[int, int] | None) -> str:
    """The inverse of :func:`parse_pattern`."""
    return "unstructured" if pattern is None else f"{pattern[0]}:{pattern[1]}"


def resolve_sparsity(sparsity: float | None, pattern: tuple[int, int] | None,
                     default: float | None = 0.5) -> float | None:
    """N:M fixes the sparsity at N/M (a different explicit one is an error); without a
    pattern an unset sparsity is ``default``."""
    if pattern is not None:
        n, m = pattern
        if sparsity is not None and abs(sparsity - n / m) > 1e-9:
            raise ConfigError("{pattern} {text} prunes {n}/{m} = {ratio:g} of the weights, "
                              "but {sparsity} is {value:g}", text=pattern_text(pattern), n=n, m=m,
                              ratio=n / m, value=sparsity, hint="leave out {sparsity} with N:M")
        return n / m
    return default if sparsity is None else sparsity


def check_sparsity(sparsity: float, *, dense_allowed: bool = True) -> float:
    """In [0, 1), or (0, 1) where pruning nothing makes no sense (a search)."""
    low_ok = sparsity >= 0 if dense_allowed else sparsity > 0
    if not (low_ok and sparsity < 1):
        raise ConfigError("{sparsity} must be in {interval}, got {value}",
                          interval="[0, 1)" if dense_allowed else "(0, 1)", value=sparsity)
    return sparsity


def check_prune_settings(*, sparsity: float, group: str, pattern: tuple[int, int] | None,
                         metric_shape: str, allocation: bool, nsamples: int, seqlen: int,
                         eval_windows: int | None) -> None:
    """Every rule a prune job's settings must meet before a model is loaded."""
    if nsamples < 1 or seqlen < 2:
        raise ConfigError("{nsamples} must be ≥ 1 and {seqlen} ≥ 2")
    if eval_windows is not None and eval_windows < 1:
        raise ConfigError("{eval_windows} must be ≥ 1")
    check_selection(sparsity=sparsity, group=group, pattern=pattern, metric_shape=metric_shape,
                    allocation=allocation)


def check_selection(*, sparsity: float, group: str, pattern: tuple[int, int] | None,
                    metric_shape: str, allocation: bool) -> None:
    """The rules on what a pruning pass selects (sparsity, group, pattern, allocation), for
    a prune job and for each of a search's candidates (runtime/job.prune_pass)."""
    check_sparsity(sparsity)
    check_group(group)
    if pattern is not None and metric_shape != "Mat":
        raise ConfigError("N:M needs a per-weight (Mat) metric; this metric is {shape}-typed "
                          "(it scores whole channels)", shape=metric_shape)
    if metric_shape in ("Row", "Col") and group == "global":
        raise ConfigError("structured (Row/Col-typed) metrics compare channels within a layer; "
                          "use {group} layer")
    if allocation and group == "global":
        raise ConfigError("{allocation} sets per-block sparsity and {group} global sets per-layer "
                          "sparsity from one threshold; use one or the other",
                          hint="use {group} row (default) or {group} layer with {allocation}")
    if allocation and sparsity > 0.99:
        raise ConfigError("{allocation} clamps every block to [0, 0.99], so {sparsity} {value:g} "
                          "cannot be met", value=sparsity)


def check_seqlen(seqlen: int) -> int:
    if seqlen < 2:
        raise ConfigError("{seqlen} must be ≥ 2")
    return seqlen
