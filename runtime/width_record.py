"""The per-block widths a Hugging Face config cannot hold, recorded in the config itself.

A Hugging Face config has one ``intermediate_size`` and one pair of head counts for every
layer. After structured removal with per-block widths (``--structure-allocation global``,
``--structure-blocks``) the blocks differ, so ``sync_config(model)`` writes what the modules
really are: the uniform fields get the widest block's widths, and ``prunedsl_structure``
lists every block's width, for example::

    "intermediate_size": 128,
    "prunedsl_structure": {"format": 1, "intermediate_size": [1, 63, 128], "load_with": "..."}

Plain ``from_pretrained`` builds every block at the widest width and then stops on the
narrower weights (size mismatch); ``structured_checkpoint.py`` reads the record back and
builds each block at its own width. When every block has the same widths again (say after
removing the odd blocks), the record is dropped and the config alone describes the model.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import PruneRuntimeError
from .models import find_blocks, text_config
from .structures import attention_of, mlp_of

RECORD_KEY = "prunedsl_structure"
FORMAT = 1
PER_BLOCK_FIELDS = ("intermediate_size", "num_attention_heads", "num_key_value_heads")
LOAD_WITH = ("per-block widths: plain transformers cannot load this directory; load it with prunedsl "
             "(prunedsl eval --model DIR, or prunedsl.runtime.models.load_model(DIR))")


def block_widths(model: nn.Module) -> dict[str, list[int]]:
    """Each block's MLP width and head counts as its modules are now (a kind the blocks lack is left out)."""
    blocks, _ = find_blocks(model)
    out: dict[str, list[int]] = {}
    try:
        out["intermediate_size"] = [mlp_of(model, b, i)[0].out_features for i, b in enumerate(blocks)]
    except PruneRuntimeError:   # no gated MLP: nothing to record for channels
        pass
    try:
        shapes = [attention_of(model, b, i)[1] for i, b in enumerate(blocks)]
    except PruneRuntimeError:
        return out
    out["num_attention_heads"] = [s.n_heads for s in shapes]
    out["num_key_value_heads"] = [s.n_kv for s in shapes]
    out["head_dim"] = [s.head_dim for s in shapes]
    return out


def sync_config(model: nn.Module) -> dict[str, Any] | None:
    """Make the config say the blocks' real widths; returns the per-block record, or None when
    one width per field describes every block (then the config is a plain Hugging Face one)."""
    cfg = text_config(model)
    widths = block_widths(model)
    record: dict[str, Any] = {}
    for names in (("intermediate_size",), ("num_attention_heads", "num_key_value_heads")):
        if not widths.get(names[0]):
            continue
        for name in names:   # plain transformers builds the widest block, then refuses the rest
            setattr(cfg, name, max(widths[name]))
        if len(set(zip(*(widths[name] for name in names)))) > 1:   # head counts go as a pair
            record.update({name: widths[name] for name in names})
    if widths.get("head_dim"):   # LLaMA would derive it from hidden_size / heads, wrong once heads go
        cfg.head_dim = widths["head_dim"][0]
    if record:
        setattr(cfg, RECORD_KEY, {"format": FORMAT, **record, "load_with": LOAD_WITH})
        return getattr(cfg, RECORD_KEY)
    if hasattr(cfg, RECORD_KEY):
        delattr(cfg, RECORD_KEY)
    return None


def record_of(config: Any) -> dict[str, Any] | None:
    """The per-block record of a config (object or config.json dict), unchecked; None without one."""
    if isinstance(config, dict):
        config = config.get("text_config") or config
        return config.get(RECORD_KEY)
    return getattr(text_config(config), RECORD_KEY, None)


def check_record(record: Any, n_blocks: int, where: str) -> dict[str, list[int]]:
    """The per-block widths of a record, checked: a known format, one positive int per block."""
    def bad(why: str) -> PruneRuntimeError:
        return PruneRuntimeError(f"{where}: the per-block width record {RECORD_KEY!r} {why}",
                                 hint="it is written by prunedsl prune --structure; prune the model "
                                      "again rather than editing it")
    if not isinstance(record, dict):
        raise bad(f"is a {type(record).__name__}, not an object")
    if record.get("format") != FORMAT:
        raise bad(f"has format {record.get('format')!r}; this prunedsl reads format {FORMAT}")
    widths = {name: record[name] for name in PER_BLOCK_FIELDS if name in record}
    if not widths:
        raise bad(f"lists none of {', '.join(PER_BLOCK_FIELDS)}")
    for name, values in widths.items():
        if not isinstance(values, list) or len(values) != n_blocks:
            raise bad(f"has {name} {values!r}; expected a list of {n_blocks} widths, one per decoder block")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise bad(f"has {name} {values!r}; every width must be a whole number >= 1")
    heads, kv = widths.get("num_attention_heads"), widths.get("num_key_value_heads")
    if (heads is None) != (kv is None):
        raise bad("lists only one of num_attention_heads, num_key_value_heads")
    if heads is not None and any(h % k for h, k in zip(heads, kv)):
        raise bad(f"has head counts {heads} that are not multiples of the KV head counts {kv}")
    return widths
