"""Physical removal of coupled structures (channels, heads, blocks) on tiny LLaMA, Gemma-3
and Qwen2 models: removal equals masking, save/reload equals in-memory, GQA stays valid,
bad requests give clear errors."""
import copy

import pytest
import torch

from prunedsl.errors import ConfigError, PruneDSLError, PruneRuntimeError
from prunedsl.runtime.block_range import parse_block_range, resolve_blocks
from prunedsl.runtime.remove import decoder_parameters, mask_structures, remove_structures
from prunedsl.runtime.structure_plan import select_removal
from prunedsl.runtime.structure_scoring import REFERENCE_SCORES, collect_dense, reference_score
from prunedsl.runtime.structured_prune import prune_structures
from prunedsl.runtime.structures import find_structures
from prunedsl.runtime.testing import VOCAB, tiny_gemma3, tiny_llama, tiny_qwen2

ARCHS = {"llama": tiny_llama, "gemma3": tiny_gemma3, "qwen2": tiny_qwen2}
CASES = [("channels", "kv_groups", 0.3), ("heads", "kv_groups", 0.5),
         ("heads", "query_heads", 0.5), ("blocks", "kv_groups", 0.5)]


@pytest.fixture
def ids():
    return torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))


def _random_plan(model, kind, heads_mode, ratio, seed=0):
    groups = find_structures(model, kind, heads_mode)
    gen = torch.Generator().manual_seed(seed)
    scores = [torch.rand(g.count, generator=gen) for g in groups]
    return select_removal(groups, scores, ratio=ratio, heads_mode=heads_mode)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind,heads_mode,ratio", CASES)
def test_removal_equals_masking(arch, kind, heads_mode, ratio, ids):
    model = ARCHS[arch]()
    plan = _random_plan(model, kind, heads_mode, ratio)
    assert plan.removed > 0 and plan.uniform
    masked = mask_structures(copy.deepcopy(model), plan)
    before = decoder_parameters(model)
    remove_structures(model, plan)
    assert decoder_parameters(model) < before
    torch.testing.assert_close(_logits(model, ids), _logits(masked, ids), atol=1e-5, rtol=0)
    # and the masking changed something, so the comparison is not vacuous
    assert not torch.allclose(_logits(masked, ids), _logits(ARCHS[arch](), ids), atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind,heads_mode,ratio", CASES)
def test_saved_model_loads_in_plain_transformers(arch, kind, heads_mode, ratio, ids, tmp_path):
    from transformers import AutoModelForCausalLM
    model = ARCHS[arch]()
    plan = _random_plan(model, kind, heads_mode, ratio, seed=3)
    remove_structures(model, plan)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert decoder_parameters(loaded) == decoder_parameters(model)
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=1e-6, rtol=0)


def _greedy_without_cache(model, ids, n):
    out = ids
    for _ in range(n):
        nxt = _logits(model, out)[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], 1)
    return out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind,heads_mode,ratio", CASES[1:])
def test_generation_with_cache_after_removal(arch, kind, heads_mode, ratio, ids):
    """GQA head removal (and block removal: layer_idx, layer_types) keeps the KV cache valid."""
    model = ARCHS[arch]()
    remove_structures(model, _random_plan(model, kind, heads_mode, ratio, seed=5))
    prompt = ids[:1, :6]
    out = model.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=True,
                         pad_token_id=0)
    assert out.shape == (1, 11)
    assert torch.equal(out, _greedy_without_cache(model, prompt, 5))


def test_config_updated():
    model = tiny_qwen2()
    remove_structures(model, _random_plan(model, "heads", "query_heads", 0.5))
    cfg = model.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (2, 2, 16)
    model = tiny_gemma3()
    plan = _random_plan(model, "blocks", "kv_groups", 0.5, seed=2)
    types = [model.config.layer_types[i] for i in plan.keep[0]]
    remove_structures(model, plan)
    assert model.config.num_hidden_layers == 2 and model.config.layer_types == types
    model = tiny_llama()
    remove_structures(model, _random_plan(model, "channels", "kv_groups", 0.25))
    assert model.config.intermediate_size == 96


def test_magnitude_keeps_the_largest_channels(ids):
    model = tiny_llama()
    mlps = [b.mlp for b in model.model.layers]
    expect = [(m.gate_proj.weight.abs().sum(1) + m.up_proj.weight.abs().sum(1)
               + m.down_proj.weight.abs().sum(0)).topk(96).indices.sort().values.tolist() for m in mlps]
    s = reference_score("magnitude", "channels")
    result = prune_structures(model, ids, kind="channels", score_fn=s.fn, requires=s.requires, ratio=0.25)
    assert [list(k) for k in result.plan.keep] == expect
    assert result.decoder_params_after < result.decoder_params_before


def test_block_influence_matches_hidden_states(ids):
    model = tiny_llama(layers=3)
    dense = collect_dense(model, ids, frozenset({"block_influence"}))
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    for i in range(2):  # the last entry of hidden_states is after the final norm
        cos = torch.nn.functional.cosine_similarity(hs[i], hs[i + 1], dim=-1).mean()
        assert float(dense.blocks[i]["block_influence"]) == pytest.approx(1 - float(cos), abs=1e-5)
    with_g = collect_dense(model, ids, frozenset({"block_influence", "G"}))  # G's forwards not counted
    assert [float(b["block_influence"]) for b in with_g.blocks] == \
        [float(b["block_influence"]) for b in dense.blocks]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", REFERENCE_SCORES)
def test_reference_scores_run(arch, name, ids):
    score = REFERENCE_SCORES[name]
    for kind in sorted(score.kinds):
        model = ARCHS[arch]()
        res = prune_structures(model, ids, kind=kind, score_fn=score.fn, requires=score.requires,
                               ratio=0.5)
        assert res.plan.removed > 0
        assert torch.isfinite(_logits(model, ids)).all()


def test_global_allocation_differs_per_block_and_records_the_widths():
    model = tiny_llama(layers=3)
    groups = find_structures(model, "channels")
    scores = [torch.arange(g.count, dtype=torch.float32) + 200 * b for b, g in enumerate(groups)]
    plan = select_removal(groups, scores, ratio=0.5, allocation="global")
    assert plan.removed == round(0.5 * 3 * 128) and not plan.uniform
    assert plan.widths == (1, 63, 128)   # block 0 keeps its best channel, block 1 gives the rest
    remove_structures(model, plan)
    assert torch.isfinite(_logits(model, torch.zeros(1, 4, dtype=torch.long))).all()
    # one width cannot say it: the widest in the config, every block's in the record
    assert model.config.intermediate_size == 128
    assert model.config.prunedsl_structure["intermediate_size"] == [1, 63, 128]


@pytest.mark.parametrize("kind,heads_mode,ratio", CASES[:3])
def test_a_block_range_keeps_the_blocks_outside_it(kind, heads_mode, ratio):
    model = tiny_gemma3()   # 4 blocks
    groups = find_structures(model, kind, heads_mode)
    scores = [torch.rand(g.count, generator=torch.Generator().manual_seed(b)) for b, g in enumerate(groups)]
    blocks = resolve_blocks("1:-1", len(groups))
    assert blocks == (1, 2)
    plan = select_removal(groups, scores, ratio=ratio, heads_mode=heads_mode, blocks=blocks)
    full = select_removal(groups, scores, ratio=ratio, heads_mode=heads_mode)
    assert plan.blocks == (1, 2) and plan.to_dict()["blocks"] == [1, 2] and not plan.uniform
    for b, g in enumerate(groups):
        if b in blocks:   # inside: what the whole-model plan takes from that block
            assert plan.keep[b] == full.keep[b] and len(plan.keep[b]) < g.count
        else:
            assert plan.keep[b] == tuple(range(g.count))
    if kind == "channels":
        assert [t - w for t, w in zip(plan.total, plan.widths)] == [0, round(ratio * 128), round(ratio * 128), 0]
    masked = mask_structures(copy.deepcopy(model), plan)
    ids = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(remove_structures(model, plan), ids), _logits(masked, ids), atol=1e-5, rtol=0)


def test_global_allocation_inside_a_block_range():
    model = tiny_llama(layers=3)
    groups = find_structures(model, "channels")
    scores = [torch.arange(g.count, dtype=torch.float32) + 200 * b for b, g in enumerate(groups)]
    plan = select_removal(groups, scores, ratio=0.5, allocation="global", blocks=[1, 2])
    assert plan.widths == (128, 1, 127)   # one ranking over blocks 1 and 2 only: 128 of their 256 go
    assert plan.removed == round(0.5 * 256)


def test_block_range_requests_are_clear_errors():
    model = tiny_llama(layers=4)
    groups = find_structures(model, "heads")
    zeros = [torch.zeros(g.count) for g in groups]
    with pytest.raises(ConfigError, match=r"block 1 \(inside the pruned range: blocks 1-2\) would remove every one"):
        select_removal(groups, zeros, ratio=0.8, blocks=resolve_blocks("1:3", 4))
    with pytest.raises(ConfigError, match=r"of the pruned range \(block 3\) would empty every block"):
        select_removal(groups, zeros, ratio=0.8, allocation="global", blocks=[3])
    b = find_structures(model, "blocks")
    with pytest.raises(ConfigError, match="channels and heads, not to removing whole blocks"):
        select_removal(b, [torch.zeros(1) for _ in b], count=1, blocks=[1])
    for text, message in [("3", "is not a block range"), ("a:b", "is not a block range"), ("1:2:3", "not a block"),
                          ("5:2", "selects no block"), ("-1:-3", "selects no block"), ("", "not a block range")]:
        with pytest.raises(ConfigError, match=message):
            parse_block_range(text)
    assert parse_block_range(" 3 : -2 ") == parse_block_range("3:-2") and str(parse_block_range(":")) == ":"
    with pytest.raises(ConfigError, match="selects none of the model's 4 decoder blocks"):
        resolve_blocks("3:-1", 4)
    with pytest.raises(ConfigError, match="reaches past the model's 4 decoder blocks"):
        resolve_blocks("2:9", 4)
    with pytest.raises(ConfigError, match="at least one of the blocks 0..3"):
        resolve_blocks([4], 4)


def test_bad_requests():
    model = tiny_llama()
    groups = find_structures(model, "heads")
    zeros = [torch.zeros(g.count) for g in groups]
    for ratio in (1.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"\[0, 1\)"):
            select_removal(groups, zeros, ratio=ratio)
    with pytest.raises(ConfigError, match="every one"):   # 2 KV groups: round(0.8 * 2) = 2
        select_removal(groups, zeros, ratio=0.8)
    q = find_structures(model, "heads", "query_heads")
    with pytest.raises(ConfigError, match="every head of the group"):
        select_removal(q, [torch.zeros(g.count) for g in q], ratio=0.8, heads_mode="query_heads")
    b = find_structures(model, "blocks")
    with pytest.raises(ConfigError, match="leave none"):
        select_removal(b, [torch.zeros(1) for _ in b], count=2)
    with pytest.raises(ConfigError, match="unknown"):
        find_structures(model, "experts")
    with pytest.raises(ConfigError, match="blocks only"):
        reference_score("block_influence", "channels")
    with pytest.raises(PruneDSLError, match="not finite"):
        select_removal(groups, [torch.tensor([1.0, float("nan")])] * 2, ratio=0.5)


def test_architecture_without_the_structure():
    from transformers import GPT2Config, GPT2LMHeadModel
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=VOCAB)).eval()
    for kind in ("channels", "heads"):
        with pytest.raises(PruneRuntimeError, match=f"no {kind} structure"):
            find_structures(gpt2, kind)


LANGUAGE_TWINS = {"magnitude": "magnitude_sp", "taylor": "taylor", "wanda_sp": "wanda_sp",
                  "block_influence": "shortgpt"}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("reference", LANGUAGE_TWINS)
def test_the_language_library_scores_equal_the_reference_scores(arch, reference, ids):
    """The compiled library structure scores (dsl/library.pdsl) give the runtime's plain-Python
    reference values on every member layout of each architecture."""
    from prunedsl.runtime.structure_scoring import language_score, score_structures
    ref = REFERENCE_SCORES[reference]
    model = ARCHS[arch]()
    for kind, heads_mode in [("channels", "kv_groups"), ("heads", "kv_groups"),
                             ("heads", "query_heads"), ("blocks", "kv_groups")]:
        if kind not in ref.kinds:
            continue
        mine = language_score(LANGUAGE_TWINS[reference], kind)
        assert mine.requires == ref.requires | ({"W"} if "W" in mine.requires else set())
        dense = collect_dense(model, ids, ref.requires | mine.requires)
        groups = find_structures(model, kind, heads_mode)
        for a, b in zip(score_structures(groups, dense, ref.fn), score_structures(groups, dense, mine.fn)):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_micro_batched_statistics_equal_the_single_pass(monkeypatch):
    """--calib-batch with --structure: the statistics accumulate over micro-batches (the
    micro-batched pass does run) and equal one pass over all windows; so do the plans."""
    import prunedsl.runtime.microbatch as microbatch
    calls = []
    real = microbatch.run_micro_batched
    monkeypatch.setattr(microbatch, "run_micro_batched", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    ids = torch.randint(0, VOCAB, (5, 20), generator=torch.Generator().manual_seed(2))
    model = tiny_llama(layers=3)
    requires = frozenset({"W", "x_norm2", "x_mean", "block_influence"})
    whole, parts = collect_dense(model, ids, requires), collect_dense(model, ids, requires, calib_batch=2)
    assert calls == [2]
    assert whole.layers.keys() == parts.layers.keys()
    for name, stats in whole.layers.items():
        for key in ("x_norm2", "x_mean"):
            torch.testing.assert_close(parts.layers[name][key], stats[key], rtol=1e-5, atol=1e-6)
    for a, b in zip(whole.blocks, parts.blocks):
        assert float(b["block_influence"]) == pytest.approx(float(a["block_influence"]), abs=1e-6)
    s = reference_score("wanda_sp", "channels")
    plans = [prune_structures(copy.deepcopy(model), ids, kind="channels", score_fn=s.fn, requires=s.requires,
                              ratio=0.25, calib_batch=batch).plan.keep for batch in (None, 2)]
    assert plans[0] == plans[1] and calls == [2, 2]
