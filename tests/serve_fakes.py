"""Fakes for the ``serve-llm`` tests: models that return random logits, and the real
SmolLM2 tokenizer (read from the GGUF file once per process, ~10 s).

    gen = Generator(SimpleNamespace(model=FakeModel(len(tok)), tokenizer=tok, spec=MODEL))
"""
from __future__ import annotations

import functools
import types

import torch

MODEL = "smollm2-135m"


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


def fake_generator(model_class=FakeModel):
    from prunedsl.serve.generate import Generator
    tok = smollm2_tokenizer()
    return Generator(types.SimpleNamespace(model=model_class(len(tok)), tokenizer=tok, spec=MODEL))


def tiny_chat_model_dir(root):
    """Save a tiny random Llama (1 block, hidden 32, context 4096) with the SmolLM2
    tokenizer and chat template to ``root`` (a directory ``load_model`` and ``prunedsl
    serve-llm --model DIR`` read; ~1 s to load). Returns ``root`` as a string."""
    from transformers import LlamaConfig, LlamaForCausalLM
    tok = smollm2_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=4096,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    LlamaForCausalLM(cfg).eval().save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


def tiny_chat_model_dir_or_skip(root):
    """``tiny_chat_model_dir(root)``, or skip the test when the SmolLM2 GGUF (its tokenizer)
    is not installed."""
    import pytest
    try:
        smollm2_tokenizer()
    except Exception as err:
        pytest.skip(str(err))
    return tiny_chat_model_dir(root)
