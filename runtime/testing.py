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


def save_tiny_workspace(root, *, layers: int = 2, hidden: int = 64, seed: int = 0, char_tokenizer: bool = False):
    """Write a saved tiny Llama + tokenizer to ``root/model`` and a WikiText-shaped data
    directory of random words (40 lines × 40 words per split) to ``root/data``; returns root.

    What the CLI and search tests need to run the real paths offline in seconds.
    """
    import random
    from pathlib import Path
    root = Path(root)
    tiny_llama(seed=seed, layers=layers, hidden=hidden).save_pretrained(root / "model")
    # the character tokenizer has the <s> / </s> tokens lm-eval needs; the word one has none
    (tiny_char_tokenizer() if char_tokenizer else tiny_tokenizer()).save_pretrained(root / "model")
    r = random.Random(seed)
    (root / "data").mkdir(parents=True, exist_ok=True)
    for name in ("wiki.valid.tokens", "wiki.test.raw"):
        lines = [" ".join(r.choice("abcdefghij") for _ in range(40)) for _ in range(40)]
        (root / "data" / name).write_text("\n".join(lines), encoding="utf-8")
    return root


def tiny_char_tokenizer():
    """A character-level tokenizer over printable ASCII with <s>, </s>, <unk> (98 ids < VOCAB).

    Encoding is compositional (encode(a + b) == encode(a) + encode(b)), so a test can
    compute a continuation's log-likelihood by hand exactly as lm-eval splits it.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{chr(c): c - 29 for c in range(32, 127)}}
    tok = Tokenizer(models.BPE(vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="</s>")


NEXT_SENTENCE_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def next_sentence_docs(text: str, n: int, *, choices: int = 4, seed: int = 0,
                       max_chars: int | None = None) -> list[dict]:
    """``n`` multiple-choice documents from running text: a sentence, then its true next sentence
    among ``choices - 1`` other sentences of the text (the label is the true one's index)."""
    import random
    sentences_by_line = []
    for line in text.split("\n"):
        line = line.strip()
        if not line or line.startswith("="):  # blank lines and WikiText headings
            continue
        parts = [s.strip() + " ." for s in line.split(" . ") if s.strip()]
        parts[-1] = parts[-1][:-2].rstrip() if parts[-1].endswith(". .") else parts[-1]
        sentences_by_line.append([s for s in parts if len(s.split()) >= 4])
    fits = (lambda s: True) if max_chars is None else (lambda s: len(s) <= max_chars)  # noqa: E731
    pairs = [(a, b) for line in sentences_by_line for a, b in zip(line, line[1:]) if fits(a) and fits(b)]
    pool = sorted({s for line in sentences_by_line for s in line if fits(s)})
    if len(pairs) < n or len(pool) < choices + 1:
        raise ValueError(f"the text has {len(pairs)} sentence pairs that fit, {n} wanted")
    r = random.Random(seed)
    docs = []
    for context, truth in r.sample(pairs, n):
        others = r.sample([s for s in pool if s not in (context, truth)], choices - 1)
        label = r.randrange(choices)
        docs.append({"context": context, "choices": others[:label] + [truth] + others[label:], "label": label})
    return docs


def write_next_sentence_task(directory, docs: list[dict], name: str = "next_sentence") -> str:
    """An lm-eval task (YAML + JSON lines) in ``directory`` for ``--tasks-dir``; returns its name."""
    import json
    from pathlib import Path
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    (directory / f"{name}.yaml").write_text(NEXT_SENTENCE_YAML.format(name=name, data=json.dumps(str(data))),
                                            encoding="utf-8")
    return name
