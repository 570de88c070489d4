"""Physically remove the structures of a ``RemovalPlan`` (slice weights, update the config).

``remove_structures(model, plan)`` slices gate/up rows + down columns (channels), q/k/v rows
(and their biases) + o columns (heads), or drops whole decoder blocks, in place, and updates
the config (``width_record.sync_config``) so ``save_pretrained`` output of a plan with one width
per block loads with plain ``AutoModelForCausalLM``:
``intermediate_size``, ``num_attention_heads`` / ``num_key_value_heads`` (``head_dim`` is
written explicitly, since LLaMA otherwise derives it from hidden_size / heads), and for
blocks ``num_hidden_layers`` plus the per-layer lists (``layer_types``: Gemma-3's and Qwen2's
sliding / full attention pattern) and each kept layer's ``layer_idx`` (KV-cache slot).

``mask_structures(model, plan)`` zeroes the same weights without changing any shape: the
reference the tests compare the smaller model against (zeroed channel/head outputs add 0;
a block whose linears are all zero passes its input through unchanged).

A plan with different widths per block (global allocation, a block range) cannot be said by
one ``intermediate_size`` / head count: the config then gets the widest block's widths plus the
per-block record of ``width_record.py``, and ``save_pretrained`` writes a prunedsl-format
checkpoint that ``models.load_model`` reads back (``structured_checkpoint.py``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import PruneRuntimeError
from .models import find_blocks, linear_layers, text_config
from .structure_plan import RemovalPlan
from .structures import attention_of, mlp_of
from .width_record import sync_config

# Config fields holding one entry per decoder layer (sliced when blocks go).
PER_LAYER_FIELDS = ("layer_types", "no_rope_layers")


def _rows(idx: Sequence[int], size: int) -> torch.Tensor:
    """Indices of units idx, each ``size`` consecutive rows/columns."""
    idx = torch.as_tensor(list(idx), dtype=torch.int64)
    return (idx.view(-1, 1) * size + torch.arange(size).view(1, -1)).reshape(-1)


@torch.no_grad()
def _slice(layer: nn.Linear, *, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> None:
    """Keep only ``rows`` (and the bias entries) / ``cols`` of a linear, in place."""
    w = layer.weight
    if rows is not None:
        w = w.index_select(0, rows.to(w.device))
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.index_select(0, rows.to(w.device)).clone(),
                                      requires_grad=layer.bias.requires_grad)
    if cols is not None:
        w = w.index_select(1, cols.to(w.device))
    layer.weight = nn.Parameter(w.contiguous(), requires_grad=layer.weight.requires_grad)
    layer.out_features, layer.in_features = w.shape


def keep_mlp_channels(block: nn.Module, mlp: tuple[nn.Linear, nn.Linear, nn.Linear], idx: torch.Tensor) -> None:
    """Keep MLP channels ``idx``: rows of gate/up, columns of down."""
    gate, up, down = mlp
    _slice(gate, rows=idx)
    _slice(up, rows=idx)
    _slice(down, cols=idx)
    if hasattr(block.mlp, "intermediate_size"):
        block.mlp.intermediate_size = len(idx)


def keep_attention_rows(attn: nn.Module, q_idx: torch.Tensor, kv_idx: torch.Tensor, n_heads: int, n_kv: int) -> None:
    """Keep q/o rows/columns ``q_idx`` and k/v rows ``kv_idx``; the head counts follow."""
    _slice(attn.q_proj, rows=q_idx)
    _slice(attn.k_proj, rows=kv_idx)
    _slice(attn.v_proj, rows=kv_idx)
    _slice(attn.o_proj, cols=q_idx)
    attn.num_key_value_groups = n_heads // n_kv   # repeat_kv / GQA packing read it
    for attr, value in (("num_heads", n_heads), ("num_key_value_heads", n_kv)):
        if hasattr(attn, attr):
            setattr(attn, attr, value)


def _head_rows(plan: RemovalPlan, b: int, rep: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(q/o indices, k/v indices, kept query heads, kept KV heads) of block b."""
    keep = plan.keep[b]
    if plan.heads_mode == "kv_groups":
        q = _rows([g * rep + r for g in keep for r in range(rep)], head_dim)
        return q, _rows(keep, head_dim), len(keep) * rep, len(keep)
    n_kv = plan.total[b] // rep
    return _rows(keep, head_dim), _rows(range(n_kv), head_dim), len(keep), n_kv


def _check_plan(model: nn.Module, plan: RemovalPlan, n_blocks: int) -> None:
    expected = 1 if plan.kind == "blocks" else n_blocks
    if len(plan.keep) != expected:
        raise PruneRuntimeError(f"the removal plan has {len(plan.keep)} entries; "
                                f"{type(model).__name__} needs {expected}")


@torch.no_grad()
def remove_structures(model: nn.Module, plan: RemovalPlan) -> nn.Module:
    """Remove the plan's structures from ``model`` in place; returns the model."""
    blocks, prefix = find_blocks(model)
    _check_plan(model, plan, len(blocks))
    if plan.kind == "blocks":
        _remove_blocks(model, blocks, prefix, plan.keep[0])
        return model
    for b, block in enumerate(blocks):
        if plan.kind == "channels":
            keep_mlp_channels(block, mlp_of(model, block, b), torch.as_tensor(plan.keep[b], dtype=torch.int64))
        else:
            attn, s = attention_of(model, block, b)
            keep_attention_rows(attn, *_head_rows(plan, b, s.rep, s.head_dim))
    sync_config(model)   # one width per field, or the per-block record (width_record.py)
    return model


def _remove_blocks(model: nn.Module, blocks: nn.ModuleList, prefix: str, keep: Sequence[int]) -> None:
    cfg = text_config(model)
    old = len(blocks)
    kept = nn.ModuleList([blocks[i] for i in keep])
    parent_path, _, attr = prefix.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, kept)
    for j, block in enumerate(kept):   # the KV cache is indexed by layer_idx
        for m in (block, getattr(block, "self_attn", None)):
            if m is not None and hasattr(m, "layer_idx"):
                m.layer_idx = j
    for name in PER_LAYER_FIELDS:
        values = getattr(cfg, name, None)
        if isinstance(values, (list, tuple)) and len(values) == old:
            setattr(cfg, name, [values[i] for i in keep])
    cfg.num_hidden_layers = len(keep)
    sync_config(model)   # the kept blocks may all have one width again


@torch.no_grad()
def mask_structures(model: nn.Module, plan: RemovalPlan) -> nn.Module:
    """Zero the weights the plan removes, shapes unchanged (the reference for removal)."""
    blocks, _ = find_blocks(model)
    _check_plan(model, plan, len(blocks))
    if plan.kind == "blocks":
        for b, block in enumerate(blocks):
            if b not in plan.keep[0]:
                for layer in linear_layers(block).values():
                    layer.weight.zero_()
                    if layer.bias is not None:
                        layer.bias.zero_()
        return model
    for b, block in enumerate(blocks):
        drop = [i for i in range(plan.total[b]) if i not in plan.keep[b]]
        if plan.kind == "channels":
            gate, up, down = mlp_of(model, block, b)
            idx = torch.as_tensor(drop, dtype=torch.int64)
            gate.weight[idx] = 0
            up.weight[idx] = 0
            down.weight[:, idx] = 0
        else:
            attn, s = attention_of(model, block, b)
            dropped = RemovalPlan(plan.kind, plan.heads_mode, plan.allocation, (tuple(drop),) * len(blocks),
                                  plan.total)
            q_idx, kv_idx, _, _ = _head_rows(dropped, b, s.rep, s.head_dim)
            attn.q_proj.weight[q_idx] = 0
            attn.o_proj.weight[:, q_idx] = 0
            if plan.heads_mode == "kv_groups":
                attn.k_proj.weight[kv_idx] = 0
                attn.v_proj.weight[kv_idx] = 0
    return model


def decoder_parameters(model: nn.Module) -> int:
    blocks, _ = find_blocks(model)
    return sum(p.numel() for p in blocks.parameters())


def parameter_count(model: nn.Module) -> int:
    """All parameters, a tied embedding counted once."""
    return sum(p.numel() for p in model.parameters())
