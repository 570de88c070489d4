"""The prunedsl-format checkpoint (per-block widths, runtime/structured_checkpoint.py) on tiny
LLaMA, Gemma-3 and Qwen2 models: it reloads through load_model to the same logits, plain
transformers refuses it, and a record that disagrees with the weights is a clear error."""
import json

import pytest
import torch

from prunedsl.errors import PruneRuntimeError
from prunedsl.runtime.models import load_model
from prunedsl.runtime.remove import decoder_parameters, remove_structures
from prunedsl.runtime.structure_plan import select_removal
from prunedsl.runtime.structures import find_structures
from prunedsl.runtime.testing import VOCAB, tiny_gemma3, tiny_llama, tiny_qwen2, tiny_tokenizer
from prunedsl.runtime.width_record import RECORD_KEY

ARCHS = {"llama": tiny_llama, "gemma3": tiny_gemma3, "qwen2": tiny_qwen2}
# (kind, heads_mode, ratio, allocation, blocks): each gives blocks of different widths
PLANS = {"channels-global": ("channels", "kv_groups", 0.3, "global", None),
         "heads-global": ("heads", "kv_groups", 0.25, "global", None),
         "channels-range": ("channels", "kv_groups", 0.5, "uniform", [1]),
         "query-heads-range": ("heads", "query_heads", 0.5, "uniform", [0])}
IDS = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))


def _logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _plan(model, kind, heads_mode, ratio, allocation, blocks, seed=0):
    groups = find_structures(model, kind, heads_mode)
    gen = torch.Generator().manual_seed(seed)
    scores = [torch.rand(g.count, generator=gen) for g in groups]
    return select_removal(groups, scores, ratio=ratio, allocation=allocation, heads_mode=heads_mode,
                          blocks=blocks)


def _pruned_dir(arch, name, path):
    model = ARCHS[arch]()
    plan = _plan(model, *PLANS[name])
    assert not plan.uniform and plan.removed > 0
    remove_structures(model, plan)
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return model, plan


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", PLANS)
def test_per_block_widths_reload_to_the_same_logits(arch, name, tmp_path):
    model, plan = _pruned_dir(arch, name, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    record = config[RECORD_KEY]
    assert record["format"] == 1 and "prunedsl" in record["load_with"]
    field = "intermediate_size" if plan.kind == "channels" else "num_attention_heads"
    assert config[field] == max(record[field])   # the widest block: plain transformers builds it
    loaded = load_model(str(tmp_path))
    assert "prunedsl-format checkpoint" in loaded.source
    assert decoder_parameters(loaded.model) == decoder_parameters(model)
    torch.testing.assert_close(_logits(loaded.model), _logits(model), atol=1e-5, rtol=0)
    loaded.model.save_pretrained(tmp_path / "again")   # a re-save writes the same record
    assert json.loads((tmp_path / "again" / "config.json").read_text())[RECORD_KEY] == record


@pytest.mark.parametrize("name", ["channels-global", "heads-global"])
def test_plain_transformers_refuses_the_checkpoint(name, tmp_path):
    from transformers import AutoModelForCausalLM
    _pruned_dir("llama", name, tmp_path)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_uniform_widths_again_drop_the_record(tmp_path):
    """Removing the one narrower block leaves one width: the config is plain Hugging Face again."""
    model = tiny_llama(layers=3)
    remove_structures(model, _plan(model, "channels", "kv_groups", 0.5, "uniform", [1]))
    assert RECORD_KEY in model.config.to_dict()
    groups = find_structures(model, "blocks")
    remove_structures(model, select_removal(groups, [torch.tensor([1.0]), torch.tensor([0.0]),
                                                     torch.tensor([1.0])], count=1))
    assert RECORD_KEY not in model.config.to_dict() and model.config.intermediate_size == 128
    model.save_pretrained(tmp_path)
    from transformers import AutoModelForCausalLM
    torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(tmp_path)), _logits(model))


def _edit_record(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config[RECORD_KEY].update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("change,message", [
    ({"intermediate_size": [100, 128]}, "do not match the weights"),
    ({"intermediate_size": [96]}, "expected a list of 2 widths"),
    ({"intermediate_size": [96, "all"]}, "whole number"),
    ({"format": 7}, "format 7"),
])
def test_a_record_that_disagrees_is_a_clear_error(change, message, tmp_path):
    _pruned_dir("llama", "channels-range", tmp_path)
    _edit_record(tmp_path, **change)
    with pytest.raises(PruneRuntimeError, match=message) as err:
        load_model(str(tmp_path))
    assert str(tmp_path / "config.json") in str(err.value)


def test_missing_weights_are_a_clear_error(tmp_path):
    _pruned_dir("llama", "channels-range", tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(PruneRuntimeError, match="no model.safetensors"):
        load_model(str(tmp_path))


def test_the_cli_reports_a_bad_record_without_a_traceback(tmp_path, capsys):
    from prunedsl.cli import main
    _pruned_dir("llama", "channels-global", tmp_path)
    _edit_record(tmp_path, intermediate_size=[5, 5])
    code = main(["eval", "--model", str(tmp_path), "--data-dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{tmp_path / 'config.json'}: the per-block widths it records do not match the weights" in err
