"""bench/bench_obs.py compares prunedsl's --reconstruct path with a plain SparseGPT written in
the bench; these tests are the link that makes its timings a like-for-like comparison: both
give the same mask and (to float32 rounding) the same weights. Also: the metric's hinv and
the OBS factor share one float64 factorisation of each input's Gram, bit for bit."""
import importlib.util
from pathlib import Path

import pytest
import torch

import prunedsl
from prunedsl.runtime import obs, statcache
from prunedsl.runtime.obs import inverse_cholesky
from prunedsl.runtime.prune import obs_factor, prune_model
from prunedsl.runtime.statcache import StatsCache
from prunedsl.runtime.stats import hinv_diag
from prunedsl.runtime.testing import VOCAB, tiny_llama

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_obs", ROOT / "bench" / "bench_obs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("seed, sparsity", [(0, 0.5), (1, 0.5), (2, 0.7)])
def test_plain_sparsegpt_and_prunedsl_reconstruct_agree(bench, seed, sparsity):
    # 160 inputs: a 128-column block, the lazy update, and a 32-column block; input 7 dead.
    w, h = bench.random_layer(16, 160, tokens=512, seed=seed)
    h[7, :] = 0.0
    h[:, 7] = 0.0
    plain_w, plain_m = bench.plain_sparsegpt(w, h, sparsity)
    ours_w, ours_m = bench.prunedsl_sparsegpt(w, h, sparsity)
    assert torch.equal(ours_m, plain_m)
    assert int(plain_m.sum()) == round(sparsity * w.numel())
    assert len(set(plain_m.sum(1).tolist())) > 1          # one threshold per block, not per row
    # plain factors H in float32, prunedsl in float64: the weights agree to float32 rounding
    torch.testing.assert_close(ours_w, plain_w, rtol=1e-4, atol=1e-6)
    assert torch.all(ours_w[ours_m] == 0) and torch.all(ours_w[:, 7] == 0)
    assert not torch.allclose(ours_w[~ours_m], w[~ours_m], atol=1e-4)  # the OBS update moved them


def test_the_obs_factor_reuses_hinvs_factorisation_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 64, 48, generator=g) * torch.exp(torch.randn(48, generator=g))
    x[..., 5] = 0.0                                         # a dead input
    entry = StatsCache(frozenset({"hinv"}), with_gram=True, keep_inverse=True).get(0, x)
    alone_u, alone_dead = inverse_cholesky(entry["gram"])
    assert torch.equal(entry["hinv"], hinv_diag(entry["gram"]))
    u, dead = obs_factor(entry)
    assert "gram_inverse" not in entry and obs_factor(entry)[0] is u   # consumed; computed once
    assert torch.equal(u, alone_u) and torch.equal(dead, alone_dead) and bool(dead[5])
    assert "gram_inverse" not in StatsCache(frozenset({"hinv"}), with_gram=True).get(0, x)


def test_prune_model_reconstruct_factorises_each_input_once(monkeypatch):
    calls = []
    real = statcache.damped_inverse
    counting = lambda h, *a: calls.append(h.shape) or real(h, *a)  # noqa: E731
    monkeypatch.setattr(statcache, "damped_inverse", counting)
    monkeypatch.setattr(obs, "damped_inverse", counting)
    ids = torch.randint(0, VOCAB, (1, 8), generator=torch.Generator().manual_seed(0))
    model = tiny_llama()
    metric = prunedsl.parse("sparsegpt")
    f = metric.compile()
    prune_model(model, ids, lambda n, s: f(s, layer=n), metric.requires, sparsity=0.5,
                group="layer", reconstruct=True, progress=False)
    blocks = len(model.model.layers)
    assert len(calls) == 4 * blocks   # q/k/v, o, gate/up, down inputs: one factorisation each
