"""Per-input-channel statistics of a linear layer's input X (tokens, in).

Only the requested statistics are computed (the compiler reports which). Shapes follow
``dsl/operands.py``: every X statistic is a float32 ``(1, in)`` row. The statistic names
(``X_STATISTICS``, ``INPUT_STATISTICS``, ``KNOWN_STATISTICS``) are derived from that
operand table; the torch code of each input statistic is one entry of ``STATISTICS`` below
(``register_statistic`` adds one at run time).

Precision: torch's CPU reductions over tokens are cascade sums (norms, means) and
Welford (variance), accurate to ~1e-7 relative in float32 over 16k tokens even for a
channel with mean 1e4x its std (checked against float64), so these stay in float32;
converting X to float64 would double their cost. The Gram inverse, where conditioning
does matter, is done in float64.
"""
from __future__ import annotations

import functools
from collections.abc import Set
from typing import Callable, Iterator

import torch

from ..dsl.operands import GRADIENT, GRAM, INPUT, LAYER, OPERANDS, operands_from
from ..errors import PruneRuntimeError


class DerivedSet(Set):
    """A read-only set recomputed from the tables on every use, so a statistic registered
    later (``dsl.operands.register_operand`` + ``register_statistic``) is in it."""

    def __init__(self, compute: Callable[[], frozenset[str]]):
        self._compute = compute

    def __contains__(self, key) -> bool:
        return key in self._compute()

    def __iter__(self) -> Iterator[str]:
        return iter(self._compute())

    def __len__(self) -> int:
        return len(self._compute())

    def __repr__(self) -> str:
        return f"{{{', '.join(map(repr, sorted(self)))}}}"

    @classmethod
    def _from_iterable(cls, it) -> frozenset[str]:  # results of | & - are plain frozensets
        return frozenset(it)


# The statistic names, derived from the operand table (dsl/operands.py: each key's source).
X_STATISTICS = DerivedSet(lambda: operands_from(INPUT))            # statistics of X itself
INPUT_STATISTICS = DerivedSet(lambda: operands_from(INPUT, GRAM))  # what input_statistics computes
LAYER_STATISTICS = DerivedSet(lambda: operands_from(LAYER))        # read off the layer itself
GRADIENT_STATISTICS = DerivedSet(lambda: operands_from(GRADIENT))  # backward passes (G)
KNOWN_STATISTICS = DerivedSet(lambda: operands_from(LAYER, INPUT, GRADIENT, GRAM))  # per layer (not BLOCK)
HINV_DAMP = 0.01  # SparseGPT's percdamp: λ in (XᵀX + λ·mean(diag XᵀX)·I)⁻¹


def check_requires(requires: set[str] | frozenset[str]) -> None:
    """Reject statistic names the runtime does not know (a compiler/runtime mismatch)."""
    unknown = set(requires) - KNOWN_STATISTICS
    if unknown:
        raise PruneRuntimeError(
            f"unknown statistic(s) {sorted(unknown)} requested",
            hint=f"the runtime provides {sorted(KNOWN_STATISTICS)}")


def gram(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """XᵀX (in, in) of the input (…, in); float32 matmul unless dtype says otherwise."""
    x = x.reshape(-1, x.shape[-1]).to(dtype)
    return x.T @ x


def hinv_diag(h: torch.Tensor, damp: float = HINV_DAMP) -> torch.Tensor:
    """diag((H + damp·mean(diag H)·I)⁻¹) as float32 (1, in), via Cholesky in float64.

    Dead inputs (zero diagonal: the channel was always 0) get H[i, i] = 1, as in
    SparseGPT, so the matrix stays positive definite.
    """
    return inverse_diag(damped_inverse(h, damp)[0])


def inverse_diag(inverse: torch.Tensor) -> torch.Tensor:
    """The float32 (1, in) diagonal of a ``damped_inverse`` (in, in)."""
    return torch.diagonal(inverse).to(torch.float32).unsqueeze(0)


def damped_inverse(h: torch.Tensor, damp: float = HINV_DAMP) -> tuple[torch.Tensor, torch.Tensor]:
    """((H + damp·mean(diag H)·I)⁻¹ float64 (in, in) via Cholesky, the dead-input mask (in,)).

    hinv's diagonal and the OBS factor (``obs.inverse_cholesky``) both start from it, so a
    layer input computed once gives both (bit for bit what each computed on its own).
    """
    h, dead = damped_gram(h, damp)
    chol, info = torch.linalg.cholesky_ex(h)
    if int(info) != 0:
        raise not_positive_definite(h)
    return torch.cholesky_inverse(chol), dead


def damped_gram(h: torch.Tensor, damp: float = HINV_DAMP) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT's conditioning of H = XᵀX (in, in): dead inputs (zero diagonal) get
    H[i, i] = 1, then damp·mean(diag H) is added to the diagonal. Returns (a float64
    copy, the dead-input mask (in,))."""
    h = h.to(torch.float64, copy=True)
    diag = torch.diagonal(h)  # a view: edits below change h
    dead = diag == 0
    diag[dead] = 1.0
    diag += damp * diag.mean()
    return h, dead


def not_positive_definite(h: torch.Tensor) -> PruneRuntimeError:
    return PruneRuntimeError(
        f"the damped Gram matrix ({h.shape[0]}×{h.shape[0]}) is not positive definite",
        hint="the layer input has NaN/inf values or the damping is too small")


class LayerInput:
    """A layer input X as (tokens, in) float32, with what several statistics share
    (the population variance and mean, the Gram matrix) computed once, on first use."""

    def __init__(self, x: torch.Tensor):
        x = x.reshape(-1, x.shape[-1])  # (tokens, in)
        self.x = x if x.dtype == torch.float32 else x.float()

    @functools.cached_property
    def var_mean(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.var_mean(self.x, dim=0, correction=0, keepdim=True)  # population, (1, in) each

    @functools.cached_property
    def gram(self) -> torch.Tensor:
        return gram(self.x)


# statistic name -> its torch code: LayerInput -> float32 (1, in). One entry per INPUT and
# GRAM operand of dsl/operands.py (tests/test_runtime_stats.py checks the two tables agree).
STATISTICS: dict[str, Callable[[LayerInput], torch.Tensor]] = {
    "x_norm2": lambda i: i.x.square().sum(0, keepdim=True).sqrt_(),
    "x_norm1": lambda i: i.x.abs().sum(0, keepdim=True),
    "x_norminf": lambda i: i.x.abs().amax(0, keepdim=True),
    "x_mean": lambda i: i.var_mean[1],
    "x_var": lambda i: i.var_mean[0],
    "x_std": lambda i: i.var_mean[0].sqrt(),
    "hinv": lambda i: hinv_diag(i.gram),
}


def register_statistic(key: str, compute: Callable[[LayerInput], torch.Tensor]) -> None:
    """Add the torch code of an input statistic (its operand: ``dsl.operands.register_operand``)."""
    if key in STATISTICS:
        raise ValueError(f"statistic {key!r} already exists")
    STATISTICS[key] = compute


def unregister_statistic(key: str) -> None:
    """Remove a statistic added by ``register_statistic`` (tests that add one)."""
    del STATISTICS[key]


def input_statistics(x: torch.Tensor, requires: set[str] | frozenset[str]) -> dict[str, torch.Tensor]:
    """The requested statistics of X (…, in) → {name: float32 (1, in)}; others ignored."""
    layer_input = LayerInput(x)
    wanted = set(requires) & INPUT_STATISTICS
    return {key: compute(layer_input) for key, compute in STATISTICS.items() if key in wanted}
