"""The proxy of a candidate with the OBS weight update (+R): the layer output error left
after SparseGPT's reconstruction, not before it.

The mask-only proxy (``Fitness.proxy``) measures e_l = tr(ΔW·XᵀX·ΔWᵀ) / tr(W·XᵀX·Wᵀ) with
ΔW = W ⊙ mask, the weights the mask removes. With +R the kept weights of each row move to
absorb the removed ones (runtime/obs.py), so the error is that of ΔW = W − W_R, with W_R
the reconstructed rows: much lower, and ranked differently (magnitude +R beats mask-only
wanda on SmolLM2 at 60%, see docs/fitness.md). Without this, every +R candidate got its
formula's mask-only proxy, which ranked +R candidates against mask-only ones by nothing.

Approximation, documented: the mask is the metric's mask on the *dense* weights (the
same mask the mask-only proxy scores), kept fixed through the sweep; ``prunedsl prune
--reconstruct`` re-scores the metric on the updated weights block by block, so its mask
differs a little. The rows are the proxy's measured subset (``proxy_rows``), each row's
update depends on that row only, and the Gram matrix is the exact XᵀX of the screened
block's input (kept next to the low-rank form for this purpose; its damped inverse
Cholesky factor is computed once per input, on first use).

Cost: the sweep is sequential in the columns and each step is a few small tensor ops, so
one sweep per layer is mostly Python overhead (~40k column steps for SmolLM2's 56 screened
layers, ~2 s). ``reconstructed_errors`` sweeps layers *together*: the rows of the layers
that share an input are one matrix (q/k/v; gate/up), and those are stacked over the blocks
(a leading dimension), so SmolLM2 takes four sweeps (q/k/v, o, gate/up: 576 columns; down:
1536). Same arithmetic as ``runtime/obs.reconstruct`` with a fixed mask (tested against it).
"""
from __future__ import annotations

from collections import defaultdict

import torch

from ..runtime.obs import BLOCKSIZE, inverse_cholesky, reconstruct, sweep_fixed


def _chol(quad: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    if "chol" not in quad:  # once per input: layers that share an input share the dict
        quad["chol"] = inverse_cholesky(quad.get("gram_exact", quad.get("gram")))
    return quad["chol"]


def _error(w: torch.Tensor, new_w: torch.Tensor, quad: dict[str, torch.Tensor]) -> float:
    gram = quad.get("gram_exact", quad.get("gram"))
    dw = w - new_w                                                     # (m, in)
    return float(((dw @ gram) * dw).sum())


@torch.no_grad()
def reconstructed_error(w: torch.Tensor, mask: torch.Tensor, quad: dict[str, torch.Tensor]) -> float:
    """tr(ΔW·H·ΔWᵀ) for ΔW = w − OBS-reconstructed w with the fixed ``mask`` (True = pruned).

    w, mask: (m, in) measured rows; quad: the proxy's per-input dict holding the exact Gram
    "gram_exact" (in, in) (or "gram" when the proxy is exact); "chol" is cached in it.
    The one-layer reference of ``reconstructed_errors`` (runtime/obs.reconstruct itself)."""
    pruned = mask.bool()
    new_w, _ = reconstruct(w, None, lambda cur, hinv, a, b: pruned[:, a:b], chol=_chol(quad))
    return _error(w, new_w, quad)


@torch.no_grad()
def reconstructed_errors(layers: list[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]],
                         blocksize: int = BLOCKSIZE, cache: dict | None = None) -> list[float]:
    """``reconstructed_error`` of each (w, mask, quad), swept together: the rows of layers that
    share an input (one quad: q/k/v, gate/up) are one matrix, and those matrices are stacked
    over the blocks where their shapes agree (one sweep for all blocks' q/k/v rows, …).

    cache: a dict kept by the caller across calls (the quads must live as long): the stacked
    inverse Cholesky factors of each batch, which depend on the inputs only."""
    errors = [0.0] * len(layers)
    by_input: dict[int, list[int]] = {}                    # id(quad) -> layer indices, in order
    for i, (_, _, quad) in enumerate(layers):
        by_input.setdefault(id(quad), []).append(i)
    batches: dict[tuple[int, int], list[list[int]]] = defaultdict(list)
    for idx in by_input.values():                          # (rows, width) -> inputs of that shape
        w0 = layers[idx[0]][0]
        batches[(sum(layers[i][0].shape[0] for i in idx), w0.shape[1])].append(idx)
    cache = {} if cache is None else cache
    for (rows, n), inputs in batches.items():
        quads = [layers[idx[0]][2] for idx in inputs]
        key = tuple(id(q) for q in quads)
        if key not in cache:
            cache[key] = torch.stack([_chol(q)[0].to(torch.float32) for q in quads])  # (B, n, n)
        u = cache[key]
        w = torch.cat([torch.cat([layers[i][0] for i in idx]) for idx in inputs]).view(len(inputs), rows, n)
        w = w.to(torch.float32, copy=True)
        mask = torch.cat([torch.cat([layers[i][1].bool() for i in idx]) for idx in inputs]).view(len(inputs),
                                                                                                 rows, n)
        for b, q in enumerate(quads):
            w[b, :, _chol(q)[1]] = 0                   # dead inputs, as reconstruct does
        sweep_fixed(w, u, mask, blocksize)
        for b, idx in enumerate(inputs):
            r0 = 0
            for i in idx:
                wi, _, quad = layers[i]
                errors[i] = _error(wi.float(), w[b, r0:r0 + wi.shape[0]], quad)
                r0 += wi.shape[0]
    return errors
