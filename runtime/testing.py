"""Tiny random models and a tiny tokenizer for tests (no download, milliseconds to build).

    from prunedsl.runtime.testing import tiny_llama, tiny_gemma3, tiny_qwen2, tiny_tokenizer
"""
from __future__ import annotations

import torch
from torch import nn

VOCAB = 256


def tiny_llama(seed: int = 0, layers: int = 2, hidden: int = 64) -> nn.Module:
    """A random LlamaForCausalLM (hidden 64, 2 blocks, vocab 256) in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                      max_position_embeddings=256, use_cache=False)
    return LlamaForCausalLM(cfg).eval()


def tiny_gemma3(seed: int = 0) -> nn.Module:
    """A random Gemma3ForCausalLM mixing sliding (window 8) and full attention layers."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                           vocab_size=VOCAB, sliding_window=8, max_position_embeddings=256,
                           layer_types=["sliding_attention", "full_attention",
                                        "sliding_attention", "full_attention"],
                           use_cache=False)
    return Gemma3ForCausalLM(cfg).eval()


def tiny_qwen2(seed: int = 0) -> nn.Module:
    """A random Qwen2ForCausalLM: q/k/v biases, GQA (4 query heads over 2 KV heads), untied lm_head."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    cfg = Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                      max_position_embeddings=256, tie_word_embeddings=False, use_cache=False)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # random init leaves the biases at 0; make them matter
        for name, p in model.named_parameters():
            if name.endswith("proj.bias"):
                p.normal_(0, 0.5)
    return model


def tiny_tokenizer():
    """A word-level tokenizer over 'a'..'z' (unknown words -> [UNK])."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {"[UNK]": 0, **{chr(97 + i): i + 1 for i in range(26)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def save_tiny_workspace(root, *, layers: int = 2, hidden: int = 64, seed: int = 0):
    """Write a saved tiny Llama + tokenizer to ``root/model`` and a WikiText-shaped data
    directory of random words (40 lines × 40 words per split) to ``root/data``; returns root.

    What the CLI and search tests need to run the real paths offline in seconds.
    """
    import random
    from pathlib import Path
    root = Path(root)
    tiny_llama(seed=seed, layers=layers, hidden=hidden).save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    r = random.Random(seed)
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name in ("wiki.valid.tokens", "wiki.test.raw"):
        lines = [" ".join(r.choice("abcdefghij") for _ in range(40)) for _ in range(40)]
        (root / "data" / name).write_text("\n".join(lines), encoding="utf-8")
    return root
