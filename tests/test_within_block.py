"""--within-block parallel: every linear of a block is decided on the block's unpruned input."""
import pytest
import torch

import prunedsl
from prunedsl.errors import PruneRuntimeError
from prunedsl.runtime.capture import run_blocks
from prunedsl.runtime.prune import linear_state, prune_model, restore_linear_state
from prunedsl.runtime.testing import tiny_llama


def _calib(model, n=2, seqlen=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (n, seqlen), generator=g)


def test_parallel_callback_sees_the_unpruned_block_input():
    model = tiny_llama()
    calib = _calib(model)
    dense_inputs: dict[str, torch.Tensor] = {}
    run_blocks(model, calib, lambda i, name, layer, x: dense_inputs.setdefault(name, x.clone()),
               progress=False)

    seen: dict[str, torch.Tensor] = {}

    def zero_everything(i, name, layer, x):  # prune the whole layer once its input is recorded
        seen[name] = x.clone()
        layer.weight.data.zero_()

    state = linear_state(model)
    run_blocks(model, calib, zero_everything, progress=False, within_block="parallel")
    # block 0 is fed the same embeddings either way; within it, parallel order means o_proj and
    # the MLP still see the dense block's inputs although q/k/v were zeroed first
    block0 = [n for n in dense_inputs if ".0." in n]
    for name in block0:
        assert torch.equal(seen[name], dense_inputs[name]), name
    restore_linear_state(model, state)
    seq: dict[str, torch.Tensor] = {}

    def zero_sequential(i, name, layer, x):
        seq[name] = x.clone()
        layer.weight.data.zero_()

    run_blocks(model, calib, zero_sequential, progress=False)
    o_proj = next(n for n in block0 if n.endswith("o_proj"))
    assert not torch.equal(seq[o_proj], dense_inputs[o_proj])  # sequential: o_proj saw zeroed v


def test_parallel_prunes_exact_counts_and_differs_from_sequential():
    metric = prunedsl.parse("wanda")
    model = tiny_llama()
    calib = _calib(model, n=4)
    state = linear_state(model)
    scorer = lambda name, stats: metric.compile()(stats, layer=name)
    seq = prune_model(model, calib, scorer, metric.requires, sparsity=0.5, progress=False)
    seq_w = linear_state(model)
    restore_linear_state(model, state)
    par = prune_model(model, calib, scorer, metric.requires, sparsity=0.5, progress=False,
                      within_block="parallel")
    assert [r.pruned for r in par.layers] == [r.pruned for r in seq.layers]
    par_w = linear_state(model)
    first = next(iter(par_w))  # block 0's first linear sees the same input in both orders
    assert torch.equal(par_w[first], seq_w[first])
    assert any(not torch.equal(par_w[n], seq_w[n]) for n in par_w)


def test_unknown_order_is_a_clear_error():
    model = tiny_llama()
    with pytest.raises(PruneRuntimeError, match="within-block order 'diagonal'"):
        run_blocks(model, _calib(model), lambda *a: None, progress=False, within_block="diagonal")


def test_the_default_order_is_parallel_with_an_allocation_rule_only(tmp_path):
    from prunedsl.api import parse_allocation
    from prunedsl.runtime.job import PruneJob, default_within_block, run_prune
    from prunedsl.runtime.testing import save_tiny_workspace
    assert default_within_block(None, None) == "sequential"
    assert default_within_block(None, parse_allocation("owl")) == "parallel"
    assert default_within_block("sequential", parse_allocation("owl")) == "sequential"
    ws = save_tiny_workspace(tmp_path)
    base = dict(model=str(ws / "model"), metric=prunedsl.parse("wanda"), nsamples=2, seqlen=32,
                data_dir=str(ws / "data"), progress=False, eval_windows=2, sparsity=0.6)
    owl = run_prune(PruneJob(**base, allocation=parse_allocation("owl")))
    assert owl.within_block == "parallel" and owl.to_dict()["within_block"] == "parallel"
    assert run_prune(PruneJob(**base)).within_block == "sequential"
