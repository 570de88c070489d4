"""Fitness: fast masks = prune_mask, the proxy = ‖ΔW Xᵀ‖² / ‖W Xᵀ‖² computed directly,
the validation split, and full evaluations that leave the model dense (tiny models)."""
from __future__ import annotations

import random

import pytest
import torch

from prunedsl.api import parse
from prunedsl.runtime.capture import run_blocks
from prunedsl.runtime.masks import prune_mask
from prunedsl.runtime.perplexity import perplexity
from prunedsl.runtime.prune import prune_model
from prunedsl.runtime.testing import save_tiny_workspace
from prunedsl.search.fitness import Fitness, FitnessSettings, screened_blocks, split_validation
from prunedsl.search.select import select_mask


@pytest.mark.parametrize("seed", range(12))
def test_select_mask_equals_prune_mask(seed):
    g = torch.Generator().manual_seed(seed)
    rows, cols = random.Random(seed).choice([(1, 1), (3, 7), (8, 16), (17, 5)])
    kind = seed % 3
    if kind == 0:    # heavy ties, like quantized weights
        s = torch.randint(0, 3, (rows, cols), generator=g).float()
    elif kind == 1:  # zeros, infinities and ties
        s = torch.randn(rows, cols, generator=g).round()
        s[0, 0] = float("inf")
        s[-1, -1] = float("-inf")
    else:
        s = torch.randn(rows, cols, generator=g)
    for sparsity in (0.0, 0.3, 0.5, 0.6, 1.0):
        for group in ("row", "layer"):
            assert torch.equal(select_mask(s, sparsity, group=group), prune_mask(s, sparsity, group=group))
    if cols % 4 == 0:
        assert torch.equal(select_mask(s, 0.5, pattern=(2, 4)), prune_mask(s, 0.5, pattern=(2, 4)))


def test_split_validation_is_disjoint():
    ids = torch.arange(5000).unsqueeze(0)  # unique tokens: a token's value is its position
    val, calib = split_validation(ids, val_windows=4, seqlen=64, nsamples=8, seed=1)
    assert val.shape == (1, 256) and calib.shape == (8, 64)
    assert int(calib.min()) >= 256 and set(val.reshape(-1).tolist()).isdisjoint(calib.reshape(-1).tolist())


def test_screened_blocks():
    assert screened_blocks(30, 8) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert screened_blocks(30, 0) == list(range(30)) == screened_blocks(30, 40)
    assert screened_blocks(30, 1) == [15]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny llama + tokenizer and a WikiText-shaped data directory of random words."""
    return save_tiny_workspace(tmp_path_factory.mktemp("tiny"), layers=3)


def _settings(tiny, **kw):
    base = dict(model=str(tiny / "model"), data_dir=str(tiny / "data"), sparsity=0.5, nsamples=4,
                seqlen=32, val_windows=4, proxy_blocks=0, proxy_rows=1.0, proxy_rank=0)
    return FitnessSettings(**{**base, **kw})


@pytest.mark.parametrize("group", ["row", "layer"])
def test_exact_proxy_is_the_relative_output_error(tiny, group):
    torch.set_num_threads(1)
    fit = Fitness(_settings(tiny, group=group), progress=False, log=lambda m: None)
    metric = parse("wanda")
    xs = {}
    run_blocks(fit.model, fit.calib, lambda i, name, layer, x: xs.__setitem__(name, x.reshape(-1, x.shape[-1])),
               progress=False)
    errs = []
    compiled = metric.compile()
    for layer in fit.layers:
        w, x = fit.dense[layer.name].double(), xs[layer.name].double()  # (out, in), (tokens, in)
        mask = prune_mask(compiled(layer.stats), 0.5, group=group)
        errs.append(float((((w * mask) @ x.T) ** 2).sum() / ((w @ x.T) ** 2).sum()))
    assert fit.proxy(metric) == pytest.approx(sum(errs) / len(errs), rel=1e-4)
    # low rank: close to exact when almost every eigenpair is kept
    approx = Fitness(_settings(tiny, group=group, proxy_rank=60), progress=False, log=lambda m: None)
    assert approx.proxy(metric) == pytest.approx(fit.proxy(metric), rel=0.05)
    # a row subset estimates the same quantity
    sub = Fitness(_settings(tiny, group=group, proxy_rows=0.5, proxy_blocks=2), progress=False, log=lambda m: None)
    assert 0 < sub.proxy(metric) < 1
    assert len(sub.layers) == 2 * 7 and all(len(l.rows) == l.shape[0] // 2 for l in sub.layers)


def test_full_evaluation_matches_prune_and_restores(tiny):
    torch.set_num_threads(1)
    fit = Fitness(_settings(tiny), progress=False, log=lambda m: None)
    dense = {k: v.clone() for k, v in fit.dense.items()}
    res = fit.full(parse("wanda"))
    for name, m in fit.model.named_modules():
        if name in dense:
            assert torch.equal(m.weight, dense[name])  # dense again afterwards
    compiled = parse("wanda").compile()
    prune_model(fit.model, fit.calib, lambda l, s: compiled(s), parse("wanda").requires, sparsity=0.5,
                progress=False)
    direct = perplexity(fit.model, fit.val_ids, seqlen=32, progress=False)["ppl"]
    assert res["val_ppl"] == pytest.approx(direct, rel=1e-6)
    assert 0.49 < res["sparsity"] < 0.51


def test_missing_statistic_and_nonfinite_are_errors(tiny):
    from prunedsl.errors import NonFiniteScoreError, SearchError
    fit = Fitness(_settings(tiny), progress=False, log=lambda m: None)
    with pytest.raises(SearchError, match="--gradients"):
        fit.proxy(parse("|W| * G"))
    with pytest.raises(NonFiniteScoreError):
        fit.proxy(parse("|W| / (‖X‖ - ‖X‖)"))


def test_micro_batched_statistics_give_the_same_proxy(tiny):
    """--calib-batch: the cached statistics and Gram matrices accumulate across micro-batches."""
    whole = Fitness(_settings(tiny), progress=False, log=lambda m: None)
    micro = Fitness(_settings(tiny), progress=False, log=lambda m: None, calib_batch=1)
    for text in ("wanda", "sparsegpt", "|W| * std(X)"):
        assert micro.proxy(parse(text)) == pytest.approx(whole.proxy(parse(text)), rel=1e-4)
