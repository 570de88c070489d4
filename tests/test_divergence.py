"""Paired fitnesses on a tiny Llama: KL to dense, NLL differences, perplexity agreement."""
import math

import pytest
import torch

import prunedsl
from prunedsl.errors import PruneRuntimeError
from prunedsl.runtime.divergence import dense_reference, evaluate_windows, nll_difference
from prunedsl.runtime.models import LoadedModel
from prunedsl.runtime.testing import tiny_llama
from prunedsl.runtime.workbench import Workbench


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model = tiny_llama(seed=0, layers=2).eval()
    gen = torch.Generator().manual_seed(1)
    calib = torch.randint(0, model.config.vocab_size, (2, 16), generator=gen)
    windows = torch.randint(0, model.config.vocab_size, (3, 24), generator=gen)  # (n, seqlen)
    bench = Workbench(LoadedModel(model, None, "tiny", "a tiny llama"), calib, progress=False)
    return bench, windows, dense_reference(bench.model, windows, top_k=None)


def _pruned_eval(bench, windows, ref, metric: str, sparsity: float):
    bench.prune(prunedsl.parse(metric), sparsity=sparsity)
    try:
        return evaluate_windows(bench.model, windows, ref)
    finally:
        bench.restore()


def test_kl_of_the_dense_model_to_itself_is_zero(setup):
    bench, windows, ref = setup
    for cached in (ref, dense_reference(bench.model, windows, top_k=8)):
        ev = evaluate_windows(bench.model, windows, cached)
        assert ev.kl.shape == (3, 23)
        assert ev.kl.abs().max() < 1e-5
        assert torch.equal(ev.nll, cached.nll)


def test_kl_is_nonnegative_and_grows_with_sparsity(setup):
    bench, windows, ref = setup
    half = _pruned_eval(bench, windows, ref, "magnitude", 0.5)
    most = _pruned_eval(bench, windows, ref, "magnitude", 0.9)
    assert (half.kl >= -1e-6).all() and (most.kl >= -1e-6).all()
    assert 0 < half.kl_mean() < most.kl_mean()


def test_top_k_kl_is_a_lower_bound_of_the_exact_kl_and_exact_at_full_vocab(setup):
    bench, windows, ref = setup
    vocab = bench.model.config.vocab_size
    exact = _pruned_eval(bench, windows, ref, "wanda", 0.7)
    coarse = dense_reference(bench.model, windows, top_k=16)
    assert 0 < coarse.tail_mass < 1 and ref.tail_mass == 0
    approx = _pruned_eval(bench, windows, coarse, "wanda", 0.7)
    assert (approx.kl <= exact.kl + 1e-5).all() and (approx.kl >= -1e-6).all()
    assert 0 < approx.kl_mean() < exact.kl_mean()
    full = _pruned_eval(bench, windows, dense_reference(bench.model, windows, top_k=vocab), "wanda", 0.7)
    assert torch.allclose(full.kl, exact.kl, atol=1e-5)


def test_nll_difference_to_itself_is_zero_and_its_mean_is_the_log_ppl_ratio(setup):
    bench, windows, ref = setup
    wanda = _pruned_eval(bench, windows, ref, "wanda", 0.6)
    same = nll_difference(wanda.nll, wanda.nll)
    assert same.mean == 0 and same.se == 0 and same.windows == 3
    mag = _pruned_eval(bench, windows, ref, "magnitude", 0.6)
    diff = nll_difference(mag.nll, wanda.nll)
    assert diff.mean == pytest.approx(math.log(mag.ppl() / wanda.ppl()), abs=1e-9)
    assert diff.se > 0
    assert nll_difference(mag.nll, wanda.nll, windows=2).windows == 2
    with pytest.raises(PruneRuntimeError, match="same tokens"):
        nll_difference(mag.nll[:2], wanda.nll)


def test_perplexity_matches_the_runtimes_perplexity_on_the_same_windows(setup):
    bench, windows, ref = setup
    ids = windows.reshape(1, -1)
    assert ref.nll.shape == (3, 23)
    ev = evaluate_windows(bench.model, windows)
    assert ev.kl is None
    assert ev.ppl() == pytest.approx(bench.perplexity(ids, seqlen=24)["ppl"], rel=1e-6)
    assert ev.ppl(windows=2) == pytest.approx(bench.perplexity(ids, seqlen=24, max_windows=2)["ppl"], rel=1e-6)
    assert sum(ev.window_nll_sums()) == pytest.approx(ev.nll_mean() * 3 * 23, rel=1e-9)


def test_a_reference_of_other_windows_is_refused(setup):
    bench, windows, ref = setup
    with pytest.raises(PruneRuntimeError, match="other windows"):
        evaluate_windows(bench.model, windows[:2], ref)
