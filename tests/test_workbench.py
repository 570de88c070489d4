"""The pruning workbench: prune → restore is bit-exact, one workbench reproduces fresh runs,
and the statistics it shares are computed once."""
import torch

import prunedsl
from prunedsl.runtime import gradients as gradients_module
from prunedsl.runtime import stats as stats_module
from prunedsl.runtime.capture import run_blocks
from prunedsl.runtime.models import LoadedModel
from prunedsl.runtime.prune import linear_state
from prunedsl.runtime.statcache import StatsCache
from prunedsl.runtime.testing import tiny_llama
from prunedsl.runtime.workbench import Workbench


def _bench(seed: int = 0) -> Workbench:
    torch.set_num_threads(1)
    model = tiny_llama(seed=seed, layers=2).eval()
    calib = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    return Workbench(LoadedModel(model, None, "tiny", "a tiny llama"), calib, progress=False)


def test_prune_then_restore_gives_back_the_dense_weights_bit_exactly():
    bench = _bench()
    dense = {k: v.clone() for k, v in linear_state(bench.model).items()}
    pruned = bench.prune(prunedsl.parse("sparsegpt"), sparsity=0.5, reconstruct=True, group="layer")
    assert 0.49 < pruned.report.sparsity < 0.51
    assert any(not torch.equal(w, dense[n]) for n, w in linear_state(bench.model).items())
    bench.restore()
    assert all(torch.equal(w, dense[n]) for n, w in linear_state(bench.model).items())


def test_two_metrics_in_turn_equal_two_fresh_runs():
    bench = _bench()
    ids = torch.randint(0, bench.model.config.vocab_size, (1, 64), generator=torch.Generator().manual_seed(2))
    seen = {}
    for metric in ("wanda", "ria"):
        bench.prune(prunedsl.parse(metric), sparsity=0.6)
        seen[metric] = (linear_state(bench.model), bench.perplexity(ids, seqlen=16)["ppl"])
    for metric in ("ria", "wanda"):  # fresh workbenches, the other order
        fresh = _bench()
        fresh.prune(prunedsl.parse(metric), sparsity=0.6)
        weights, ppl = seen[metric]
        assert fresh.perplexity(ids, seqlen=16)["ppl"] == ppl
        assert all(torch.equal(w, weights[n]) for n, w in linear_state(fresh.model).items())


def test_gradients_are_computed_once_per_workbench(monkeypatch):
    calls = []
    real = gradients_module.gradient_norms
    monkeypatch.setattr(gradients_module, "gradient_norms", lambda *a, **k: calls.append(1) or real(*a, **k))
    bench = _bench()
    first = bench.prune(prunedsl.parse("gblm"), sparsity=0.5)
    bench.prune(prunedsl.parse("|W| * G"), sparsity=0.5)
    again = bench.prune(prunedsl.parse("gblm"), sparsity=0.5)
    assert len(calls) == 1
    assert [vars(l) for l in first.report.layers] == [vars(l) for l in again.report.layers]


def test_stats_cache_computes_each_input_statistic_once(monkeypatch):
    calls = []
    real = stats_module.input_statistics
    import prunedsl.runtime.statcache as statcache
    monkeypatch.setattr(statcache, "input_statistics", lambda flat, req: calls.append(flat.shape) or real(flat, req))
    bench = _bench()
    cache = StatsCache(frozenset({"x_norm2", "hinv"}), with_gram=True)
    got = {}
    run_blocks(bench.model, bench.calib, lambda i, name, layer, x: got.__setitem__(name, cache.get(i, x)),
               progress=False)
    # per block: q/k/v share one input, gate/up another; o_proj and down_proj have their own
    assert len(calls) == 2 * 4 and len(got) == 2 * 7
    q, k = (got[f"model.layers.0.self_attn.{p}_proj"] for p in "qk")
    assert q is k and "gram" in q and q["hinv"].shape == q["x_norm2"].shape
