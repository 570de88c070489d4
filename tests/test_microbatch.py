"""--calib-batch: statistics accumulate across micro-batches and give the single pass's masks."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import prunedsl
from prunedsl.errors import ConfigError, PruneRuntimeError
from prunedsl.runtime.capture import capture_inputs, run_blocks
from prunedsl.runtime.microbatch import find_stages, micro_batches
from prunedsl.runtime.models import linear_layers
from prunedsl.runtime.prune import linear_state, prune_model, restore_linear_state
from prunedsl.runtime.statcache import InputAccumulator, StatsCache
from prunedsl.runtime.stats import input_statistics
from prunedsl.runtime.testing import tiny_gemma3, tiny_llama

ALL_X = frozenset({"x_norm2", "x_norm1", "x_norminf", "x_mean", "x_std", "x_var", "hinv"})


def _calib(n=6, seqlen=16, seed=1):
    return torch.randint(0, 256, (n, seqlen), generator=torch.Generator().manual_seed(seed))


@settings(max_examples=40, deadline=None)
@given(tokens=st.integers(1, 60), width=st.integers(1, 9), cuts=st.lists(st.integers(1, 59), max_size=5),
       offset=st.sampled_from([0.0, 1e3]), seed=st.integers(0, 2 ** 16))
def test_accumulated_statistics_equal_the_whole_input_statistics(tokens, width, cuts, offset, seed):
    """Sums add, max is a max, Chan's merge of mean/variance is exact up to rounding, even
    for channels whose mean is 1000× their spread."""
    x = torch.randn(tokens, width, generator=torch.Generator().manual_seed(seed)) + offset
    whole = input_statistics(x, ALL_X - {"hinv"})
    acc = InputAccumulator(ALL_X, with_gram=True)
    bounds = sorted({0, tokens, *[c for c in cuts if c < tokens]})
    for a, b in zip(bounds, bounds[1:]):
        acc.add(x[a:b].reshape(1, b - a, width))  # (batch, seqlen, in) like a layer input
    got = acc.finish()
    for key, value in whole.items():
        assert got[key].dtype == torch.float32 and got[key].shape == (1, width)
        scale = float(value.abs().max()) + 1.0
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-5 * scale, msg=key)
    torch.testing.assert_close(got["gram"], x.T @ x, rtol=1e-5, atol=1e-4 * (1 + offset ** 2))


def test_an_accumulator_that_saw_nothing_is_an_error():
    with pytest.raises(PruneRuntimeError, match="no calibration token"):
        InputAccumulator(frozenset({"x_norm2"})).finish()


def test_micro_batches_cut_consecutive_windows():
    ids = _calib(n=5)
    assert [c.shape[0] for c in micro_batches(ids, 2)] == [2, 2, 1]
    assert torch.equal(torch.cat(micro_batches(ids, 2)), ids)
    assert micro_batches(ids, 5)[0] is ids and micro_batches(ids, None)[0] is ids


@pytest.mark.parametrize("build", [tiny_llama, tiny_gemma3])
def test_stages_group_the_linears_that_share_an_input(build):
    model = build()
    cap = capture_inputs(model, _calib(n=2))
    block = cap.blocks[0]
    names = {f"b.{k}": v for k, v in linear_layers(block).items()}
    stages = [[n.split(".")[-1] for n in s] for s in find_stages(block, names, cap.hidden, cap.calls[0])]
    assert stages == [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]


def _prune(model, calib, text, *, reconstruct=False, within_block="sequential", calib_batch=None, **kw):
    metric = prunedsl.parse(text)
    compiled = metric.compile()
    report = prune_model(model, calib, lambda name, stats: compiled(stats, layer=name), metric.requires,
                         sparsity=0.5, group="layer" if reconstruct else "row", progress=False,
                         reconstruct=reconstruct, within_block=within_block, calib_batch=calib_batch, **kw)
    return report, linear_state(model)


METRICS = [("wanda", False), ("|W| * std(X) + |W| * |mean(X)|", False), ("ria", False),
           ("sparsegpt", True), ("wanda", True)]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metric=st.sampled_from(METRICS), within=st.sampled_from(["sequential", "parallel"]),
       batch=st.integers(1, 5), seed=st.integers(0, 1000))
def test_micro_batched_masks_equal_the_single_batch_masks(metric, within, batch, seed):
    text, reconstruct = metric
    model = tiny_llama()
    calib = _calib(n=6, seed=seed)
    dense = linear_state(model)
    ref_report, ref = _prune(model, calib, text, reconstruct=reconstruct, within_block=within)
    restore_linear_state(model, dense)
    report, got = _prune(model, calib, text, reconstruct=reconstruct, within_block=within, calib_batch=batch)
    assert [r.pruned for r in report.layers] == [r.pruned for r in ref_report.layers]
    assert [r.name for r in report.layers] == [r.name for r in ref_report.layers]  # same order
    for name in ref:
        assert torch.equal(got[name] == 0, ref[name] == 0), name
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-5)


def test_gemma3_and_allocation_and_global_group_micro_batched():
    """Sliding-window blocks, OWL's dense statistics pass and the global group's dense
    scores all go through the micro-batched passes."""
    from prunedsl.runtime.workbench import Workbench
    from prunedsl.runtime.models import LoadedModel
    calib = _calib(n=4)
    for kw in ({"allocation": prunedsl.api.parse_allocation("owl")}, {"group": "global"}):
        masks = []
        for batch in (None, 1):
            bench = Workbench(LoadedModel(tiny_gemma3(), None, "tiny", "test"), calib, progress=False,
                              calib_batch=batch)
            bench.prune(prunedsl.parse("wanda"), sparsity=0.5, **kw)
            masks.append({k: v == 0 for k, v in linear_state(bench.model).items()})
        for other in masks[1:]:
            assert all(torch.equal(other[k], masks[0][k]) for k in masks[0])


def test_layers_never_see_more_than_a_micro_batch():
    """The point of micro-batches: no layer input holds more than B windows."""
    model = tiny_llama()
    widest = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: widest.append(args[0].shape[0]))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    _prune(model, _calib(n=6), "sparsegpt", reconstruct=True, calib_batch=2)
    for h in hooks:
        h.remove()
    assert widest and max(widest) == 2


def test_gradient_metric_micro_batched_equals_single_batch():
    model = tiny_llama()
    calib = _calib(n=3)
    dense = linear_state(model)
    _, ref = _prune(model, calib, "gblm")
    restore_linear_state(model, dense)
    _, got = _prune(model, calib, "gblm", calib_batch=2)
    assert all(torch.equal(got[k] == 0, ref[k] == 0) for k in ref)


def test_micro_batches_need_a_statistics_cache_and_a_positive_size():
    model = tiny_llama()
    with pytest.raises(PruneRuntimeError, match="statistics cache"):
        run_blocks(model, _calib(n=4), lambda *a: None, progress=False, calib_batch=2)
    with pytest.raises(PruneRuntimeError, match="at least 1"):
        run_blocks(model, _calib(n=4), lambda *a: None, progress=False, calib_batch=0,
                   stats=StatsCache(frozenset({"W"})))
    from prunedsl.runtime.job import PruneJob, run_prune
    with pytest.raises(ConfigError, match="calib_batch must be"):
        run_prune(PruneJob(model="nowhere", metric=prunedsl.parse("wanda"), calib_batch=0))


def test_calib_batch_at_least_nsamples_is_the_single_pass():
    model = tiny_llama()
    calib = _calib(n=4)
    dense = linear_state(model)
    _, ref = _prune(model, calib, "sparsegpt", reconstruct=True)
    restore_linear_state(model, dense)
    _, got = _prune(model, calib, "sparsegpt", reconstruct=True, calib_batch=4)
    assert all(torch.equal(got[k], ref[k]) for k in ref)  # bit-identical: the same code path


def test_micro_batched_block_outputs_equal_the_single_pass():
    model = tiny_llama()
    calib = _calib(n=5)
    cache = StatsCache(frozenset({"W", "x_norm2"}))
    single = run_blocks(model, calib, lambda *a: None, progress=False)["output"]
    micro = run_blocks(model, calib, lambda i, n, l, x: cache.get(i, x), progress=False, calib_batch=2,
                       stats=cache)
    assert micro["output"] is None and [o.shape[0] for o in micro["outputs"]] == [2, 2, 1]
    torch.testing.assert_close(torch.cat(micro["outputs"]), single, rtol=1e-5, atol=1e-5)
