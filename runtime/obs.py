"""SparseGPT's OBS weight reconstruction (Frantar & Alistarh 2023), blocked with lazy updates.

Pruning weight q of a row w with the layer Hessian H = XᵀX (damped) changes the layer
output least when the remaining weights of the row move by δ = −w_q/[H⁻¹]_qq · H⁻¹[q, :]
(Optimal Brain Surgeon). SparseGPT applies this column by column, left to right, with
one inverse Hessian shared by all rows: after column j is decided, the inverse Hessian of
the remaining columns is the inverse of H[j+1:, j+1:]. All of those come from one upper
Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU): row j of U is the OBS update direction for column j
(divided by √[H_{j:,j:}⁻¹]_00 = U_jj). Updates are applied eagerly inside a block of
``blocksize`` columns and lazily (one matmul) to the columns right of the block.

Dead inputs (XᵀX diagonal 0: the channel is always 0) get H[i, i] = 1 and W[:, i] = 0,
and the damping is ``damp · mean(diag H)`` on the diagonal, as in SparseGPT.

Mask selection goes through a ``select(w, hinv, start, end)`` callback, called when the
sweep reaches column ``start``: at the start of each block (unstructured) or of each
group of M columns (N:M), with ``w`` the *current* weights (columns left of ``start``
final, the others updated by everything decided so far) and ``hinv`` the conditioned
inverse-Hessian diagonal U_jj² = [H_{j:,j:}⁻¹]_00 (1, in). It returns the bool mask of
columns start..end. With ``select`` scoring w²/hinv this is SparseGPT's own adaptive mask
selection; a fixed mask is ``lambda w, h, a, b: mask[:, a:b]``.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from ..errors import NonFiniteScoreError, PruneRuntimeError
from .masks import lowest_k, prune_mask
from .stats import HINV_DAMP, damped_inverse, not_positive_definite

BLOCKSIZE = 128  # SparseGPT's default
# select(current w (out, in), conditioned hinv (1, in), start, end) -> mask (out, end - start)
Select = Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]
# score(current w (out, in), conditioned hinv (1, in)) -> scores (out, in)
Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def inverse_cholesky(h: torch.Tensor, damp: float = HINV_DAMP, *,
                     inverse: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, dead): upper Cholesky factor of the damped (H)⁻¹ (in, in) float64, dead-input mask (in,).

    inverse: ``stats.damped_inverse(h, damp)`` if already computed (for the metric's hinv).
    """
    inv, dead = inverse if inverse is not None else damped_inverse(h, damp)
    chol, info = torch.linalg.cholesky_ex(inv, upper=True)
    if int(info) != 0:
        raise not_positive_definite(inv)
    return chol, dead


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # The sweep is thousands of tiny ops on (out,) and (out, B) tensors: intra-op threads
    # only add synchronisation (10-50x slower with 2 threads on a busy 2-core machine).
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@torch.no_grad()
def reconstruct(w: torch.Tensor, gram: torch.Tensor | None, select: Select, *,
                group_cols: int | None = None, blocksize: int = BLOCKSIZE, damp: float = HINV_DAMP,
                chol: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``w`` (out, in) with OBS updates; returns (new weight float32, mask (out, in) bool).

    gram: XᵀX (in, in) of the layer input, or ``chol`` = ``inverse_cholesky(gram)`` computed
    before (layers that share an input share it). ``select`` is called at each block start,
    or every ``group_cols`` columns (N:M: M) if given; see the module docstring.
    """
    out, n = w.shape
    with _one_thread():
        if chol is None:
            if gram is None or gram.shape != (n, n):
                shape = None if gram is None else tuple(gram.shape)
                raise PruneRuntimeError(f"Gram matrix {shape} does not fit weight {tuple(w.shape)}")
            chol = inverse_cholesky(gram, damp)
        u64, dead = chol
        if group_cols is not None and blocksize % group_cols:
            blocksize = group_cols * max(1, blocksize // group_cols)  # groups never straddle blocks
        u = u64.to(torch.float32)                                      # (in, in) upper triangular
        hinv = u64.diagonal().square().to(torch.float32).unsqueeze(0)  # (1, in) conditioned diag
        w = w.to(torch.float32, copy=True)
        w[:, dead] = 0
        mask = torch.zeros(out, n, dtype=torch.bool, device=w.device)
        _sweep(w, u, mask, blocksize, select, hinv, group_cols or blocksize)
    return w, mask


def _sweep(w: torch.Tensor, u: torch.Tensor, mask: torch.Tensor, blocksize: int,
           select: Select | None = None, hinv: torch.Tensor | None = None, step: int | None = None) -> None:
    """The column sweep; updates ``w`` in place. ``w``, ``mask`` (..., out, in) and ``u``
    (..., in, in) may carry leading dimensions (layers swept together). With ``select``
    (2-D only) the mask is filled in place, ``step`` columns at a time on the current
    weights; without, ``mask`` is given and fixed (search/obs_proxy.py)."""
    n = w.shape[-1]
    step = step or blocksize
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        w1 = w[..., i1:i2].clone()                  # (..., out, B) eagerly updated block
        err = torch.zeros_like(w1)                  # (..., out, B) scaled errors for the lazy update
        u1 = u[..., i1:i2, i1:i2]
        for j in range(i2 - i1):
            c = i1 + j
            if select is not None and j % step == 0:  # decide the next columns on current weights
                w[:, i1:i2] = w1
                end = min(c + step, i2)
                mask[:, c:end] = _checked(select(w, hinv, c, end), (w.shape[0], end - c))
            d = u1[..., j, j].unsqueeze(-1)                        # (..., 1)
            q = w1[..., j].masked_fill(mask[..., c], 0.0)          # (..., out)
            e = (w1[..., j] - q) / d                               # (..., out)
            w1[..., j + 1:] -= e.unsqueeze(-1) * u1[..., j, j + 1:].unsqueeze(-2)
            w1[..., j] = q
            err[..., j] = e
        w[..., i1:i2] = w1
        if i2 < n:
            w[..., i2:] -= err @ u[..., i1:i2, i2:]                # lazy batch update


def sweep_fixed(w: torch.Tensor, u: torch.Tensor, mask: torch.Tensor, blocksize: int = BLOCKSIZE) -> None:
    """The OBS sweep with a fixed mask (True = pruned), in place, on one thread (small ops).
    w, mask: (..., out, in); u: (..., in, in) the upper Cholesky factors of H⁻¹ (float32)."""
    with _one_thread():
        _sweep(w, u, mask, blocksize)


def _checked(m: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if m.dtype != torch.bool or tuple(m.shape) != shape:
        raise PruneRuntimeError(f"mask selection gave {m.dtype} {tuple(m.shape)}, expected bool {shape}")
    return m


def metric_select(score: Score, sparsity: float, *, group: str = "row",
                  pattern: tuple[int, int] | None = None) -> Select:
    """SparseGPT-style selection from a metric re-evaluated on the current weights.

    Unstructured: the columns start..end of each row (group "row") or of the whole block
    (group "layer") prune ``round(s·end) − round(s·start)`` of their entries, so every row
    (layer) ends with exactly the count ``masks.prune_mask`` gives. N:M: n of each group.
    The whole current weight is scored (row/column reductions keep their meaning) and the
    columns start..end are used.
    """
    if group not in ("row", "layer"):
        raise PruneRuntimeError(f"reconstruction selects per row or per layer, not {group!r}")

    def select(w: torch.Tensor, hinv: torch.Tensor, a: int, b: int) -> torch.Tensor:
        out, n = w.shape
        scores = score(w, hinv)
        if tuple(scores.shape) != (out, n):
            raise PruneRuntimeError(f"reconstruction needs per-weight scores {(out, n)}, "
                                    f"got {tuple(scores.shape)}")
        block = scores[:, a:b]                                        # (out, b - a)
        if pattern is not None:
            return prune_mask(block, 0.0, pattern=pattern)
        if torch.isnan(block).any():
            raise NonFiniteScoreError(f"{int(torch.isnan(block).sum())} scores are NaN")
        if group == "row":
            return lowest_k(block, round(sparsity * b) - round(sparsity * a))
        k = round(sparsity * (out * b)) - round(sparsity * (out * a))
        return lowest_k(block.reshape(1, -1), k).view(out, b - a)

    return select
