"""FLAP bias compensation: removed channels' / heads' mean contribution goes into the consumer's
bias, so the consumer's output on the calibration mean input is unchanged; the saved model
reloads in plain transformers to the same logits; architectures that cannot carry the bias
are refused clearly."""
import copy

import pytest
import torch

from prunedsl.errors import ConfigError
from prunedsl.runtime.bias_compensation import check_compensable, compensate
from prunedsl.runtime.remove import remove_structures
from prunedsl.runtime.structure_plan import RemovalPlan, select_removal
from prunedsl.runtime.structure_scoring import collect_dense, reference_score
from prunedsl.runtime.structured_prune import prune_structures
from prunedsl.runtime.structures import find_structures
from prunedsl.runtime.testing import VOCAB, tiny_gemma3, tiny_llama, tiny_qwen2


@pytest.fixture
def ids():
    return torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def test_hand_computed_channel_compensation():
    """One block, 4 channels, channels 1 and 3 removed: bias = W[:, [1, 3]] @ mean[[1, 3]]."""
    model = tiny_llama(layers=1)
    down = model.model.layers[0].mlp.down_proj
    n = down.in_features
    plan = RemovalPlan("channels", "kv_groups", "uniform", (tuple(i for i in range(n) if i not in (1, 3)),), (n,))
    mean = torch.arange(n, dtype=torch.float32) / n
    w = down.weight.detach().clone()
    compensate(model, plan, {"model.layers.0.mlp.down_proj": mean})
    expected = w[:, 1] * mean[1] + w[:, 3] * mean[3]
    torch.testing.assert_close(down.bias.detach(), expected)
    assert model.config.mlp_bias is True
    assert torch.equal(model.model.layers[0].mlp.gate_proj.bias, torch.zeros(n))


@pytest.mark.parametrize("make,kind,mode", [(tiny_llama, "channels", "kv_groups"),
                                            (tiny_llama, "heads", "kv_groups"),
                                            (tiny_llama, "heads", "query_heads"),
                                            (tiny_gemma3, "heads", "kv_groups")])
def test_output_on_the_mean_input_is_preserved(make, kind, mode, ids):
    model = make()
    dense = copy.deepcopy(model)
    score = reference_score("wanda_sp", kind)
    result = prune_structures(model, ids, kind=kind, score_fn=score.fn, requires=score.requires,
                              ratio=0.5, heads_mode=mode, bias_compensation=True)
    stats = collect_dense(dense, ids, frozenset({"x_mean"}))
    part, consumer = ("mlp", "down_proj") if kind == "channels" else ("self_attn", "o_proj")
    groups = find_structures(dense, kind, mode)
    for b, keep in enumerate(result.plan.keep):
        name = f"model.layers.{b}.{part}.{consumer}"
        mean = stats.layers[name]["x_mean"].reshape(-1)
        before = dense.get_submodule(name)(mean)
        cols = torch.cat([groups[b].members[-1].index[k] for k in keep])   # the consumer's kept columns
        after = model.get_submodule(name)(mean[cols])
        torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
        # without the bias the output would differ: the check is not vacuous
        assert not torch.allclose(after - model.get_submodule(name).bias, before, atol=1e-4)


@pytest.mark.parametrize("make,kind", [(tiny_llama, "channels"), (tiny_llama, "heads"), (tiny_gemma3, "heads")])
def test_saved_and_reloaded_equals_in_memory(make, kind, ids, tmp_path):
    from transformers import AutoModelForCausalLM
    model = make()
    score = reference_score("magnitude", kind)
    prune_structures(model, ids, kind=kind, score_fn=score.fn, requires=score.requires, ratio=0.5,
                     bias_compensation=True)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    consumer = "mlp.down_proj" if kind == "channels" else "self_attn.o_proj"
    assert loaded.get_submodule(f"model.layers.0.{consumer}").bias is not None
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=1e-5, rtol=0)


def test_compensation_changes_the_model(ids):
    """With and without compensation the same plan gives different logits (the bias is used)."""
    a, b = tiny_llama(), tiny_llama()
    s = reference_score("magnitude", "channels")
    prune_structures(a, ids, kind="channels", score_fn=s.fn, requires=s.requires, ratio=0.5)
    prune_structures(b, ids, kind="channels", score_fn=s.fn, requires=s.requires, ratio=0.5,
                     bias_compensation=True)
    assert not torch.allclose(_logits(a, ids), _logits(b, ids), atol=1e-4)


@pytest.mark.parametrize("make,kind,what", [(tiny_qwen2, "channels", "mlp_bias"),
                                            (tiny_qwen2, "heads", "attention_bias|o_proj"),
                                            (tiny_gemma3, "channels", "mlp_bias|down_proj"),
                                            (tiny_llama, "blocks", "channels and heads")])
def test_refused_where_the_config_cannot_carry_the_bias(make, kind, what, ids):
    model = make()
    with pytest.raises(ConfigError, match=what):
        check_compensable(model, kind)
    s = reference_score("magnitude", kind)
    before = {n: p.clone() for n, p in model.named_parameters()}
    with pytest.raises(ConfigError):
        prune_structures(model, ids, kind=kind, score_fn=s.fn, requires=s.requires, ratio=0.5,
                         bias_compensation=True)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # nothing changed
