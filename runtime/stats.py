"""Per-input-channel statistics of a linear layer's input X (tokens, in).

Only the requested statistics are computed (the compiler reports which). Shapes follow
``dsl/operands.py``: every X statistic is a float32 ``(1, in)`` row.

Precision: torch's CPU reductions over tokens are cascade sums (norms, means) and
Welford (variance), accurate to ~1e-7 relative in float32 over 16k tokens even for a
channel with mean 1e4x its std (checked against float64), so these stay in float32;
converting X to float64 would double their cost. The Gram inverse, where conditioning
does matter, is done in float64.
"""
from __future__ import annotations

import torch

from ..errors import PruneRuntimeError

X_STATISTICS = frozenset({"x_norm2", "x_norm1", "x_norminf", "x_mean", "x_std", "x_var"})
INPUT_STATISTICS = X_STATISTICS | {"hinv"}   # what input_statistics can compute from X
LAYER_STATISTICS = frozenset({"W", "n_in", "n_out"})  # read off the layer itself
KNOWN_STATISTICS = INPUT_STATISTICS | LAYER_STATISTICS | {"G"}
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


def input_statistics(x: torch.Tensor, requires: set[str] | frozenset[str]) -> dict[str, torch.Tensor]:
    """The requested statistics of X (…, in) → {name: float32 (1, in)}; others ignored."""
    x = x.reshape(-1, x.shape[-1])  # (tokens, in)
    if x.dtype != torch.float32:
        x = x.float()
    need = set(requires) & INPUT_STATISTICS
    out: dict[str, torch.Tensor] = {}
    if "x_norm2" in need:
        out["x_norm2"] = x.square().sum(0, keepdim=True).sqrt_()
    if "x_norm1" in need:
        out["x_norm1"] = x.abs().sum(0, keepdim=True)
    if "x_norminf" in need:
        out["x_norminf"] = x.abs().amax(0, keepdim=True)
    if need & {"x_mean", "x_std", "x_var"}:
        var, mean = torch.var_mean(x, dim=0, correction=0, keepdim=True)  # population
        if "x_mean" in need:
            out["x_mean"] = mean
        if "x_var" in need:
            out["x_var"] = var
        if "x_std" in need:
            out["x_std"] = var.sqrt()
    if "hinv" in need:
        out["hinv"] = hinv_diag(gram(x))
    return out
