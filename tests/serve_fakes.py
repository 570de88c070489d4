"""Fakes for the ``serve-llm`` tests: models that return random logits, and the real
SmolLM2 tokenizer (read from the GGUF file once per process, ~10 s) or Qwen2.5-Coder's
(its converted cache directory, or its GGUF parts: installed with PRUNEDSL_QWEN=0.5b).

    gen = Generator(SimpleNamespace(model=FakeModel(len(tok)), tokenizer=tok, spec=MODEL))
    gen = fake_generator(tokenizer=qwen_tokenizer())   # Qwen2's byte-level BPE and ChatML
"""
from __future__ import annotations

import functools
import types

import torch

MODEL = "smollm2-135m"
QWEN = "qwen2.5-coder-0.5b"


class FakeModel:
    """Random logits, no cache: exercises the mask, the closer and the protocol."""

    def __init__(self, vocab: int):
        self.config = types.SimpleNamespace(max_position_embeddings=2048)
        self.generation_config = None
        self._vocab = vocab
        self.gen = torch.Generator().manual_seed(0)

    def get_output_embeddings(self):
        return types.SimpleNamespace(weight=torch.empty(self._vocab, 1))

    def __call__(self, input_ids, past_key_values=None, use_cache=True):
        logits = torch.randn(1, input_ids.shape[1], self._vocab, generator=self.gen) * 3
        return types.SimpleNamespace(logits=logits, past_key_values=None)


class EchoModel(FakeModel):
    """Random logits that depend only on the last input token and its position in the
    reply, as a real model's depend on the text: the same seed gives the same reply."""

    pos = 0

    def __call__(self, input_ids, past_key_values=None, use_cache=True):
        self.pos = 0 if input_ids.shape[1] > 1 else self.pos + 1  # a prompt starts a reply
        g = torch.Generator().manual_seed(int(input_ids[0, -1]) * 7919 + self.pos)
        logits = torch.randn(1, input_ids.shape[1], self._vocab, generator=g) * 3
        return types.SimpleNamespace(logits=logits, past_key_values=None)


@functools.lru_cache(maxsize=None)
def smollm2_tokenizer():
    """The SmolLM2 tokenizer from the GGUF file (raises when the package is missing)."""
    from transformers import AutoTokenizer

    from prunedsl.runtime.models import _smollm2_file
    path = _smollm2_file()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@functools.lru_cache(maxsize=None)
def qwen_tokenizer():
    """The Qwen2.5-Coder-0.5B tokenizer: from its converted cache directory (written by the
    first ``load_model``), else from its GGUF (assembled from the part packages; raises when
    they are not installed)."""
    from transformers import AutoTokenizer

    from prunedsl.runtime import packaged
    from prunedsl.runtime.models import ALIASES
    where = packaged.converted_dir(QWEN)
    if (where / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(where))
    path = ALIASES[QWEN]()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def tokenizer_or_skip(which: str = MODEL):
    """The tokenizer of ``which`` (``MODEL`` or ``QWEN``), or skip the test saying why."""
    import pytest
    try:
        return (qwen_tokenizer if which == QWEN else smollm2_tokenizer)()
    except Exception as err:
        hint = " (install the Qwen parts: PRUNEDSL_QWEN=0.5b scripts/install.sh)" if which == QWEN else ""
        pytest.skip(f"the {which} tokenizer is not installed: {err}{hint}")


def fake_generator(model_class=FakeModel, tokenizer=None):
    """A Generator over a fake model with ``tokenizer`` (default SmolLM2's)."""
    from prunedsl.serve.generate import Generator
    tok = tokenizer if tokenizer is not None else smollm2_tokenizer()
    return Generator(types.SimpleNamespace(model=model_class(len(tok)), tokenizer=tok, spec=MODEL))


def tiny_chat_model_dir(root, tokenizer=None):
    """Save a tiny random chat model (1 block, hidden 32, context 4096) with ``tokenizer``
    and its chat template to ``root`` (a directory ``load_model`` and ``prunedsl serve-llm
    --model DIR`` read; ~1 s to load): a Llama with SmolLM2's tokenizer (the default), a
    Qwen2 with Qwen's. Returns ``root`` as a string."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    tok = tokenizer if tokenizer is not None else smollm2_tokenizer()
    qwen = "qwen" in type(tok).__name__.lower()   # Qwen2Tokenizer(Fast)
    config, model = (Qwen2Config, Qwen2ForCausalLM) if qwen else (LlamaConfig, LlamaForCausalLM)
    torch.manual_seed(0)
    cfg = config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=4096,
                 tie_word_embeddings=True, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    model(cfg).eval().save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


def tiny_chat_model_dir_or_skip(root, which: str = MODEL):
    """``tiny_chat_model_dir(root)`` with the tokenizer of ``which``, or skip the test when
    that tokenizer is not installed."""
    return tiny_chat_model_dir(root, tokenizer_or_skip(which))
