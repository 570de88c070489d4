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

Cost: one column sweep over the measured rows per screened layer, about a second for
SmolLM2 (8 blocks, 1/4 of the rows) against ~0.07 s for the mask-only proxy; only +R
candidates pay it.
"""
from __future__ import annotations

import torch

from ..runtime.obs import inverse_cholesky, reconstruct


@torch.no_grad()
def reconstructed_error(w: torch.Tensor, mask: torch.Tensor, quad: dict[str, torch.Tensor]) -> float:
    """tr(ΔW·H·ΔWᵀ) for ΔW = w − OBS-reconstructed w with the fixed ``mask`` (True = pruned).

    w, mask: (m, in) measured rows; quad: the proxy's per-input dict holding the exact Gram
    "gram_exact" (in, in) (or "gram" when the proxy is exact); "chol" is cached in it."""
    gram = quad.get("gram_exact", quad.get("gram"))
    if "chol" not in quad:
        quad["chol"] = inverse_cholesky(gram)
    pruned = mask.bool()
    new_w, _ = reconstruct(w, None, lambda cur, hinv, a, b: pruned[:, a:b], chol=quad["chol"])
    dw = w - new_w                                                     # (m, in)
    return float(((dw @ gram) * dw).sum())
