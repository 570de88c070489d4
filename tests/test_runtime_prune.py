"""Capture/replay and the sequential pruning pass on tiny random Llama and Gemma-3 models."""
import pytest
import torch
from torch import nn

from prunedsl.errors import NonFiniteScoreError, PruneRuntimeError
from prunedsl.runtime.capture import capture_inputs, replay, run_blocks
from prunedsl.runtime.models import find_blocks, linear_layers
from prunedsl.runtime.prune import dense_scores, linear_state, prune_model, restore_linear_state
from prunedsl.runtime.statcache import StatsCache, layer_stats
from prunedsl.runtime.stats import input_statistics
from prunedsl.runtime.testing import VOCAB, tiny_gemma3, tiny_llama

MODELS = {"llama": tiny_llama, "gemma3": tiny_gemma3}


def wanda(name, stats):
    return stats["W"].abs() * stats["x_norm2"]


@pytest.fixture
def ids():
    return torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(0))


def block_outputs(model, ids):
    """Each block's output in an ordinary model forward (forward hooks)."""
    blocks, _ = find_blocks(model)
    outs = []
    handles = [b.register_forward_hook(lambda m, a, o: outs.append(o[0] if isinstance(o, tuple) else o))
               for b in blocks]
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    return outs, logits


def layer_inputs(model, ids):
    """Every block linear's input in an ordinary model forward."""
    blocks, prefix = find_blocks(model)
    seen = {}
    handles = []
    for i, b in enumerate(blocks):
        for n, m in linear_layers(b).items():
            handles.append(m.register_forward_pre_hook(
                lambda mod, a, name=f"{prefix}.{i}.{n}": seen.setdefault(name, a[0].detach().clone())))
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("kind", MODELS)
def test_replay_reproduces_every_block_and_the_logits(kind, ids):
    model = MODELS[kind]()
    expected, logits = block_outputs(model, ids)
    cap = capture_inputs(model, ids)
    assert all("forward" not in b.__dict__ for b in cap.blocks)  # originals restored
    hidden = cap.hidden
    with torch.no_grad():
        for i, block in enumerate(cap.blocks):
            hidden = replay(block, hidden, cap.calls[i])
            assert torch.equal(hidden, expected[i]), f"block {i}"
        got = model.lm_head(model.model.norm(hidden))
        cap_ = getattr(model.config, "final_logit_softcapping", None)
        if cap_:
            got = torch.tanh(got / cap_) * cap_
    torch.testing.assert_close(got, logits, rtol=0, atol=0)


def test_gemma3_blocks_get_their_own_masks(ids):
    """Sliding and full attention layers are called with different masks and rotary
    embeddings; each block's own arguments are recorded and replayed."""
    cap = capture_inputs(tiny_gemma3(), ids)
    masks = [c.kwargs["attention_mask"] for c in cap.calls]
    rope = [c.kwargs["position_embeddings"][0] for c in cap.calls]  # cos
    assert masks[0] is masks[2] and masks[1] is masks[3] and masks[0] is not masks[1]
    assert torch.equal(rope[0], rope[2]) and not torch.equal(rope[0], rope[1])
    for c in cap.calls:
        assert not any(k in c.kwargs for k in ("past_key_values", "past_key_value"))


def test_capture_restores_forward_on_error():
    model = tiny_llama()
    with pytest.raises(Exception):
        capture_inputs(model, torch.full((1, 4), VOCAB + 5))  # out-of-range ids
    assert all("forward" not in b.__dict__ for b in find_blocks(model)[0])


@pytest.mark.parametrize("kind", MODELS)
def test_sparsity_zero_changes_nothing(kind, ids):
    model = MODELS[kind]()
    before = linear_state(model)
    expected, _ = block_outputs(model, ids)
    report = prune_model(model, ids, wanda, frozenset({"x_norm2"}), sparsity=0.0, progress=False)
    assert report.pruned == 0 and report.sparsity == 0.0
    for name, w in linear_state(model).items():
        assert torch.equal(w, before[name])
    out = run_blocks(model, ids, lambda *a: None, progress=False)["output"]
    assert torch.equal(out, expected[-1])


@pytest.mark.parametrize("kind", MODELS)
def test_sequential_statistics_come_from_pruned_outputs(kind, ids):
    """Each layer's statistics equal those of a plain forward of the *final* pruned
    model: a layer's input depends only on layers that ran (and were pruned) before it."""
    model = MODELS[kind]()
    dense_inputs = layer_inputs(model, ids)
    seen = {}

    def scorer(name, stats):
        seen[name] = stats["x_norm2"].clone()
        return wanda(name, stats)

    prune_model(model, ids, scorer, frozenset({"x_norm2"}), sparsity=0.5, progress=False)
    pruned_inputs = layer_inputs(model, ids)
    names = list(pruned_inputs)
    assert list(seen) == names  # every block linear scored, in execution order
    for name in names:
        ref = input_statistics(pruned_inputs[name], {"x_norm2"})["x_norm2"]
        torch.testing.assert_close(seen[name], ref, rtol=1e-5, atol=1e-6)
    # and block 1 really saw different inputs than the dense model would give it
    later = [n for n in names if ".1." in n][0]
    dense_ref = input_statistics(dense_inputs[later], {"x_norm2"})["x_norm2"]
    assert not torch.allclose(seen[later], dense_ref, rtol=1e-3)


def test_row_sparsity_is_exact_per_row(ids):
    model = tiny_llama()
    report = prune_model(model, ids, wanda, frozenset({"x_norm2"}), sparsity=0.5, progress=False)
    assert report.sparsity == 0.5 and len(report.layers) == 14
    for r in report.layers:
        w = model.get_submodule(r.name).weight
        assert ((w == 0).sum(1) == w.shape[1] // 2).all(), r.name
    assert model.lm_head.weight.ne(0).all() and model.model.embed_tokens.weight.ne(0).all()


def test_global_group_total_is_exact(ids):
    model = tiny_llama()
    report = prune_model(model, ids, wanda, frozenset({"x_norm2"}), sparsity=0.37,
                         group="global", progress=False)
    assert report.pruned == round(0.37 * report.total)
    assert report.group == "global" and "dense_scores" in report.seconds
    fractions = {r.sparsity for r in report.layers}
    assert len(fractions) > 1  # global thresholds give non-uniform layers


def test_global_uses_dense_scores_threshold(ids):
    model = tiny_llama()
    scores = dense_scores(model, ids, wanda, frozenset({"x_norm2"}), progress=False)
    assert all(torch.equal(w, model.get_submodule(n).weight) for n, w in linear_state(model).items())
    from prunedsl.runtime.masks import global_sparsities
    fractions = global_sparsities(scores, 0.5)
    report = prune_model(model, ids, wanda, frozenset({"x_norm2"}), sparsity=0.5, group="global",
                         progress=False)
    for r in report.layers:
        assert r.pruned == round(fractions[r.name] * r.total)


def test_layer_sparsity_and_nm(ids):
    model = tiny_llama()
    name = "model.layers.1.mlp.down_proj"
    report = prune_model(model, ids, wanda, frozenset({"x_norm2"}), sparsity=0.5,
                         layer_sparsity={name: 0.25}, progress=False)
    by = {r.name: r for r in report.layers}
    assert by[name].sparsity == 0.25 and by["model.layers.0.mlp.down_proj"].sparsity == 0.5
    with pytest.raises(PruneRuntimeError, match="unknown layers"):
        prune_model(model, ids, wanda, frozenset({"x_norm2"}), sparsity=0.5,
                    layer_sparsity={"model.layers.9.nope": 0.1}, progress=False)
    model = tiny_llama()
    prune_model(model, ids, wanda, frozenset({"x_norm2"}), sparsity=0.5, pattern=(2, 4), progress=False)
    w = model.model.layers[0].self_attn.q_proj.weight
    assert ((w.view(w.shape[0], -1, 4) == 0).sum(-1) == 2).all()


def test_structured_row_scores_prune_whole_rows(ids):
    model = tiny_llama()
    report = prune_model(model, ids, lambda n, s: s["W"].abs().sum(1, keepdim=True), frozenset(),
                         sparsity=0.25, progress=False)
    w = model.model.layers[0].mlp.gate_proj.weight
    zero_rows = (w == 0).all(1)
    assert int(zero_rows.sum()) == round(0.25 * w.shape[0])
    assert report.sparsity == pytest.approx(0.25, abs=0.01)


def test_scorer_errors_name_the_layer(ids):
    model = tiny_llama()
    state = linear_state(model)

    def nan_scorer(name, stats):
        s = stats["W"].abs()
        if ".1." in name:
            s = s * float("nan")
        return s

    with pytest.raises(NonFiniteScoreError, match=r"model\.layers\.1\.self_attn\.q_proj"):
        prune_model(model, ids, nan_scorer, frozenset(), sparsity=0.5, progress=False)
    assert all("forward" not in b.__dict__ for b in find_blocks(model)[0])
    assert not any(m._forward_pre_hooks for m in model.modules() if isinstance(m, nn.Linear))
    restore_linear_state(model, state)
    assert all(torch.equal(w, model.get_submodule(n).weight) for n, w in state.items())
    with pytest.raises(PruneRuntimeError, match="expected scores of shape"):
        prune_model(model, ids, lambda n, s: s["W"].sum(), frozenset(), sparsity=0.5, progress=False)


def test_statistics_are_shared_and_complete(ids):
    model = tiny_llama()
    cache = StatsCache(frozenset({"x_norm2", "hinv", "x_mean"}), with_gram=True)
    stats = {}

    def on_linear(i, name, layer, x):  # what every pass over the blocks does
        stats[name] = layer_stats(name, layer, cache.get(i, x), {})

    run_blocks(model, ids, on_linear, progress=False)
    q = stats["model.layers.0.self_attn.q_proj"]
    k = stats["model.layers.0.self_attn.k_proj"]
    assert q["x_norm2"] is k["x_norm2"]  # one computation for the shared input
    assert set(q) == {"W", "n_in", "n_out", "x_norm2", "hinv", "x_mean", "gram"}
    assert q["gram"].shape == (64, 64) and q["n_out"] == 64.0


def test_gradient_statistic(ids):
    model = tiny_llama()
    seen = {}

    def scorer(name, stats):
        seen[name] = stats["G"]
        return stats["G"] * stats["W"].abs()

    prune_model(model, ids, scorer, frozenset({"G"}), sparsity=0.0, progress=False)
    name = "model.layers.0.mlp.up_proj"
    layer = model.get_submodule(name)
    sq = torch.zeros_like(layer.weight)
    for row in ids:
        model.zero_grad()
        model(input_ids=row[None], labels=row[None]).loss.backward()
        sq += layer.weight.grad ** 2
    model.zero_grad()
    torch.testing.assert_close(seen[name], sq.sqrt())
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())
