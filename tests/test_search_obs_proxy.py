"""The +R proxy (search/obs_proxy.py): the error left after the OBS update with the fixed
mask lies between the exact optimum for that mask (Optimal Brain Surgeon removing the whole
pruned set of a row at once) and the mask-only error, and the proxy uses it for +R only."""
from __future__ import annotations

import pytest
import torch

from prunedsl.api import parse
from prunedsl.runtime.stats import damped_gram
from prunedsl.search.fitness import Fitness
from prunedsl.search.obs_proxy import reconstructed_error, reconstructed_errors
from prunedsl.search.recipe import Recipe
from test_search_fitness import _settings, tiny  # noqa: F401  (the fixture)


def _optimum(w: torch.Tensor, mask: torch.Tensor, h: torch.Tensor) -> float:
    """Σ_rows w_Pᵀ [(H⁻¹)_PP]⁻¹ w_P: the least output error reachable with the pruned set P
    of each row, the kept weights free (H damped as the sweep's)."""
    hinv = torch.linalg.inv(h)
    total = 0.0
    for r in range(w.shape[0]):
        p = mask[r].nonzero().squeeze(1)
        wp = w[r, p].double()
        total += float(wp @ torch.linalg.solve(hinv[p][:, p], wp))
    return total


@pytest.mark.parametrize("seed", range(4))
def test_the_error_after_obs_is_between_the_optimum_and_the_mask_only_error(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 24, generator=g) * torch.linspace(0.2, 3, 24)     # (tokens, in), uneven channels
    gram = x.T @ x
    w = torch.randn(5, 24, generator=g)
    mask = torch.rand(5, 24, generator=g) < 0.5
    err = reconstructed_error(w, mask, {"gram": gram})
    h, _ = damped_gram(gram)                                                # the H the sweep inverts
    dw = w * mask
    mask_only = float(((dw.double() @ gram.double()) * dw.double()).sum())
    optimum = _optimum(w, mask, h)
    assert optimum * (1 - 1e-4) <= err + 1e-6 and err < mask_only


@pytest.mark.parametrize("seed", range(3))
def test_sweeping_layers_together_equals_one_sweep_per_layer(seed):
    """Layers that share an input (one quad) are one matrix, inputs of the same shape are
    stacked into one sweep, a dead input channel is handled as reconstruct handles it."""
    g = torch.Generator().manual_seed(seed)
    quads = []
    for width in (40, 40, 300, 40):                    # three inputs of width 40, one of 300
        x = torch.randn(500, width, generator=g) * torch.rand(width, generator=g)
        x[:, 3] = 0                                    # a dead input
        quads.append({"gram": x.T @ x})
    layers = []
    for quad, rows in ((quads[0], 7), (quads[0], 3), (quads[1], 11), (quads[2], 5), (quads[2], 9),
                       (quads[3], 4), (quads[3], 6)):   # 0 and 3: 10 rows of width 40, one sweep
        n = quad["gram"].shape[0]
        w = torch.randn(rows, n, generator=g)
        layers.append((w, torch.rand(rows, n, generator=g) < 0.6, quad))
    cache: dict = {}
    together = reconstructed_errors(layers, blocksize=16, cache=cache)
    assert len(cache) == 3 and reconstructed_errors(layers, blocksize=16, cache=cache) == together
    alone = [reconstructed_error(w, m, {"gram": q["gram"]}) for w, m, q in layers]
    assert together == pytest.approx(alone, rel=1e-4)
    assert len(set(together)) == len(together)


def test_the_proxy_of_a_reconstructing_candidate_is_its_error_after_obs(tiny):  # noqa: F811
    fit = Fitness(_settings(tiny, proxy_rank=4), progress=False, log=lambda m: None)
    for text in ("|W|", "|W| * ‖X‖"):
        metric = parse(text)
        mask_only = fit.proxy(metric)
        assert fit.proxy(metric, Recipe()) == mask_only                     # the mask-only recipe
        plus_r = fit.proxy(metric, Recipe(reconstruct=True, group="layer"))
        assert 0 < plus_r < mask_only
        assert fit.proxy(metric, Recipe(reconstruct=True, group="row")) != plus_r   # its selection group
        assert fit.proxy(metric, Recipe(reconstruct=True, group="layer")) == plus_r  # deterministic
