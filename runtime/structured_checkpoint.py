"""Load a prunedsl-format checkpoint: a saved model whose blocks have different widths.

The directory is what ``save_pretrained`` writes (safetensors, tokenizer, config.json), but
its config.json carries the per-block record of ``width_record.py`` (``prunedsl_structure``).
Plain ``AutoModelForCausalLM.from_pretrained`` builds every block at the widest width and
stops with a size-mismatch error. Here:

1. build the model from the config (every block at the widest width, on CPU);
2. cut each block's MLP / attention to its recorded width (``remove.keep_mlp_channels``,
   ``keep_attention_rows``: the first rows, since the weights are replaced next);
3. load the safetensors state dict strictly: every key, every shape.

``models.load_model(DIR)`` calls ``load_per_block`` when ``has_per_block_record(DIR)``; so do
``prunedsl eval --model DIR``, ``prunedsl prune --model DIR`` and the Python API through it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import PruneRuntimeError
from .models import find_blocks, text_config
from .remove import keep_attention_rows, keep_mlp_channels
from .structures import attention_of, mlp_of
from .width_record import check_record, record_of, sync_config

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"   # a sharded checkpoint's key → file map


def has_per_block_record(directory: str | Path) -> bool:
    """Whether ``directory``'s config.json carries per-block widths (cheap: reads the JSON only)."""
    path = Path(directory) / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False   # no or unreadable config: from_pretrained says why
    return isinstance(config, dict) and record_of(config) is not None


def load_per_block(directory: str | Path, dtype: torch.dtype | str = "auto") -> tuple[nn.Module, Any]:
    """(model, tokenizer) of a prunedsl-format checkpoint, every block at its recorded width."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    directory = Path(directory)
    config = AutoConfig.from_pretrained(directory)
    n_blocks = text_config(config).num_hidden_layers
    widths = check_record(record_of(config), n_blocks, str(directory / CONFIG_NAME))
    kw = {"dtype": dtype} if isinstance(dtype, torch.dtype) else {}   # else the config's dtype
    model = AutoModelForCausalLM.from_config(config, **kw)
    resize_blocks(model, widths)
    _load_weights(model, directory)
    _load_generation_config(model, directory)
    return model.eval(), AutoTokenizer.from_pretrained(directory)


@torch.no_grad()
def resize_blocks(model: nn.Module, widths: dict[str, list[int]]) -> None:
    """Cut every block to its recorded MLP width / head counts (the weights are not kept)."""
    blocks, _ = find_blocks(model)
    for b, block in enumerate(blocks):
        if "intermediate_size" in widths:
            keep_mlp_channels(block, mlp_of(model, block, b), torch.arange(widths["intermediate_size"][b]))
        if "num_attention_heads" in widths:
            attn, s = attention_of(model, block, b)
            n_heads, n_kv = widths["num_attention_heads"][b], widths["num_key_value_heads"][b]
            keep_attention_rows(attn, torch.arange(n_heads * s.head_dim), torch.arange(n_kv * s.head_dim),
                                n_heads, n_kv)
    sync_config(model)   # the same record again, so a re-save writes it unchanged


def _weight_files(directory: Path) -> list[Path]:
    index = directory / INDEX_NAME
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise PruneRuntimeError(f"{index}: unreadable shard index ({type(e).__name__}: {e})") from None
        return [directory / n for n in names]
    if not (directory / WEIGHTS_NAME).is_file():
        raise PruneRuntimeError(f"{directory} has per-block widths in {CONFIG_NAME} but no {WEIGHTS_NAME}",
                                hint="a prunedsl-format checkpoint is saved as safetensors")
    return [directory / WEIGHTS_NAME]


def _load_weights(model: nn.Module, directory: Path) -> None:
    """The safetensors weights into ``model``: every key present (tied copies aside), every shape equal."""
    from safetensors.torch import load_file
    files = _weight_files(directory)
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(f))
        except (OSError, ValueError, RuntimeError) as e:   # a missing shard, a torn file
            raise PruneRuntimeError(f"could not read {f}: {type(e).__name__}: {e}") from None
    where = ", ".join(f.name for f in files)
    expected = model.state_dict()
    wrong = [f"{k}: {tuple(v.shape)} in {where}, {tuple(expected[k].shape)} by the record"
             for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        raise PruneRuntimeError(
            f"{directory / CONFIG_NAME}: the per-block widths it records do not match the weights "
            f"({len(wrong)} tensors differ, first {wrong[0]})",
            hint="the directory was changed after prunedsl saved it; prune the model again")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not _tied(model, k, state)]
    if missing or result.unexpected_keys:
        detail = (f"missing {', '.join(missing[:3])}" if missing else "") + \
                 ("; " if missing and result.unexpected_keys else "") + \
                 (f"unexpected {', '.join(result.unexpected_keys[:3])}" if result.unexpected_keys else "")
        raise PruneRuntimeError(f"{where} in {directory} does not hold the model its {CONFIG_NAME} "
                                f"describes: {detail}")


def _tied(model: nn.Module, key: str, saved: dict[str, torch.Tensor]) -> bool:
    """Whether parameter ``key`` is the same tensor as one that was saved (a tied lm_head)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    p = params.get(key)
    return p is not None and any(q is p for k, q in params.items() if k != key and k in saved)


def _load_generation_config(model: nn.Module, directory: Path) -> None:
    if (directory / "generation_config.json").is_file():
        from transformers import GenerationConfig
        model.generation_config = GenerationConfig.from_pretrained(directory)
