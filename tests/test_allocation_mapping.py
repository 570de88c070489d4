"""The mapping from importances to block sparsities, the per-layer rounding, and the block
statistics (Hill estimator, score moments): properties on random inputs."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunedsl.errors import PruneRuntimeError
from prunedsl.runtime.allocation import (MAX_SPARSITY, apportion, hill_alpha, layer_sparsities,
                                         score_statistics, spread_sparsities)

finite = st.floats(-1e6, 1e6, allow_nan=False)
blocks = st.integers(1, 40)


@st.composite
def cases(draw):
    n = draw(blocks)
    importance = draw(st.lists(finite, min_size=n, max_size=n))
    weights = draw(st.lists(st.integers(1, 10**7), min_size=n, max_size=n))
    target = draw(st.floats(0, MAX_SPARSITY))
    lam = draw(st.floats(0, 1))
    return importance, weights, target, lam


def wmean(s, w):
    return math.fsum(a * b for a, b in zip(s, w)) / math.fsum(w)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_mean_is_exact_and_every_block_in_range(case):
    importance, weights, target, lam = case
    s = spread_sparsities(importance, weights, target, lam)
    assert abs(wmean(s, weights) - target) < 1e-9  # the target is 1e-4
    assert all(0.0 <= x <= MAX_SPARSITY for x in s)


@settings(max_examples=200, deadline=None)
@given(cases())
def test_more_important_blocks_keep_more_weights(case):
    importance, weights, target, lam = case
    s = spread_sparsities(importance, weights, target, lam)
    order = sorted(range(len(s)), key=lambda i: importance[i])
    assert all(s[a] >= s[b] - 1e-12 for a, b in zip(order, order[1:]))


@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=30), st.floats(0, MAX_SPARSITY))
def test_constant_importance_is_uniform_exactly(weights, target):
    assert spread_sparsities([3.0] * len(weights), weights, target, 0.3) == [target] * len(weights)
    assert spread_sparsities(list(range(len(weights))), weights, target, 0.0) == [target] * len(weights)


def test_linear_inside_the_band_and_clamped_outside():
    s = spread_sparsities([0.0, 1.0, 2.0], [1, 1, 1], 0.5, 0.1)
    assert s == pytest.approx([0.6, 0.5, 0.4])  # the range [S − λ, S + λ], mean S
    s = spread_sparsities([0.0, 1.0, 2.0, 3.0], [1, 1, 1, 1], 0.95, 0.3)
    assert max(s) == MAX_SPARSITY and wmean(s, [1] * 4) == pytest.approx(0.95, abs=1e-12)


def test_rejects_what_cannot_be_met():
    with pytest.raises(PruneRuntimeError, match="target sparsity"):
        spread_sparsities([0, 1], [1, 1], 0.995, 0.1)
    with pytest.raises(PruneRuntimeError, match="not finite in block"):
        spread_sparsities([0, math.nan], [1, 1], 0.5, 0.1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(1, 300), st.integers(1, 64)), min_size=1, max_size=30))
def test_apportion_total_within_half_a_step(items):
    ideal = [f * n for f, n, _ in items]
    units = [u for _, _, u in items]
    caps = [n for _, n, _ in items]
    target = math.fsum(x * u for x, u in zip(ideal, units))
    k = apportion(ideal, units, caps, target)
    assert all(0 <= a <= c for a, c in zip(k, caps))
    assert all(abs(a - x) < 1 + 1e-9 for a, x in zip(k, ideal))  # at most one step off
    assert abs(math.fsum(a * u for a, u in zip(k, units)) - target) <= max(units) / 2 + 1e-6


@pytest.mark.parametrize("group, shape, atol", [("row", "Mat", 1536 / 2), ("layer", "Mat", 0.5),
                                                 ("layer", "Row", 1536 / 2)])
def test_layer_sparsities_meet_the_total_count(group, shape, atol):
    # SmolLM2-like blocks: q, k, v, o, gate, up, down
    dims = {"q": (576, 576), "k": (192, 576), "v": (192, 576), "o": (576, 576),
            "gate": (1536, 576), "up": (1536, 576), "down": (576, 1536)}
    blocks = [{f"b{b}.{n}": d for n, d in dims.items()} for b in range(30)]
    params = [sum(o * i for o, i in dims.values())] * 30
    s = spread_sparsities([math.sin(b) for b in range(30)], params, 0.7, 0.08)
    frac = layer_sparsities(s, blocks, 0.7, group=group, metric_shape=shape)
    total = sum(params)
    pruned = 0
    for layers in blocks:
        for name, (o, i) in layers.items():
            steps, unit = (o, i) if shape == "Row" else (i, o) if group == "row" else (o * i, 1)
            k = round(frac[name] * steps)  # what prune_mask will prune
            assert k / steps == frac[name] and frac[name] <= MAX_SPARSITY
            pruned += k * unit
    assert abs(pruned - 0.7 * total) <= atol
    assert abs(pruned / total - 0.7) < 1e-4


def test_hill_alpha_orders_heavy_against_light_tails():
    g = torch.Generator().manual_seed(0)
    light = torch.randn(48, 96, generator=g)  # Marchenko-Pastur bulk: a light tail, large alpha
    u, _, v = torch.linalg.svd(light, full_matrices=False)
    heavy = u @ torch.diag(torch.arange(1, 49, dtype=torch.float32) ** 2.0) @ v  # power-law spectrum
    a_light, a_heavy = hill_alpha(light), hill_alpha(heavy)
    assert math.isfinite(a_light) and math.isfinite(a_heavy) and a_heavy < a_light
    assert hill_alpha(torch.eye(8)) == math.inf  # all eigenvalues equal: no tail


def _with_spectrum(out, inp, s2, seed=0):
    """W = U diag(s) Vᵀ with orthonormal U, V: the nonzero eigenvalues of WᵀW are exactly s²."""
    g = torch.Generator().manual_seed(seed)
    k = len(s2)
    u = torch.linalg.qr(torch.randn(out, k, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(inp, k, generator=g, dtype=torch.float64))[0]
    return u @ torch.diag(torch.tensor(s2, dtype=torch.float64).sqrt()) @ v.T


@pytest.mark.parametrize("out, inp, s2, alpha", [
    # AlphaPruning's xmin_mid: eigenvalues λ of WᵀW ascending (numerical zeros dropped), the
    # tail is the top half from index N // 2 on, xmin its smallest, α = 1 + n / Σ log(λ / xmin)
    (6, 10, [0.5, 1, 2, 4, 8, 16], 1 + 3 / (3 * math.log(2))),   # tail 4, 8, 16
    (10, 6, [0.5, 1, 2, 4, 8, 16], 1 + 3 / (3 * math.log(2))),   # WᵀW or WWᵀ: same eigenvalues
    (8, 12, [1, 3, 9, 27, 81], 1 + 3 / (3 * math.log(3))),       # rank 5 of 8: zeros dropped; tail 9, 27, 81
    (5, 7, [2, 3, 5, 7, 11], 1 + 3 / (math.log(7 / 5) + math.log(11 / 5))),  # odd N: the tail keeps the median
])
def test_hill_alpha_exact_on_a_known_spectrum(out, inp, s2, alpha):
    w = _with_spectrum(out, inp, s2)
    assert hill_alpha(w) == pytest.approx(alpha, rel=1e-9)
    # the variants a broken estimator would compute are all far from it
    lam = sorted(s2)
    tail = lam[len(lam) // 2:]
    no_one = len(tail) / math.fsum(math.log(x / tail[0]) for x in tail)
    xmin_smallest = 1 + len(lam) / math.fsum(math.log(x / lam[0]) for x in lam)
    singular = 1 + len(tail) / math.fsum(math.log(math.sqrt(x / tail[0])) for x in tail)
    assert alpha == pytest.approx(1 + no_one)
    assert min(abs(alpha - v) for v in (no_one, xmin_smallest, singular)) > 0.3


def test_score_statistics_match_a_direct_computation():
    g = torch.Generator().manual_seed(1)
    chunks = [torch.rand(30, 40, generator=g) ** 3, torch.rand(7, 5, generator=g) * 10]
    x = torch.cat([c.reshape(-1) for c in chunks]).double()
    d = x - x.mean()
    got = score_statistics(chunks, ["skew", "kurtosis", "outlier_ratio:5", "outlier_ratio:2"])
    assert got["skew"] == pytest.approx(float((d ** 3).mean() / (d ** 2).mean() ** 1.5), rel=1e-9)
    assert got["kurtosis"] == pytest.approx(float((d ** 4).mean() / (d ** 2).mean() ** 2 - 3), rel=1e-9)
    assert got["outlier_ratio:5"] == float((x > 5 * x.mean()).double().mean())
    assert got["outlier_ratio:2"] == float((x > 2 * x.mean()).double().mean())
    assert score_statistics([torch.ones(4, 4)], ["skew", "kurtosis"]) == {"skew": 0.0, "kurtosis": 0.0}
