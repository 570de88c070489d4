"""Coupled structures of a decoder, found from the architecture (docs/structured.md).

A *structure* is a group of weights removed together so the model stays a valid, smaller
model of the same architecture (LLaMA / SmolLM2, Qwen2, Gemma-3):

- ``channels``: MLP channel i = row i of gate_proj and up_proj + column i of down_proj.
- ``heads``: with ``heads_mode="kv_groups"`` (default) one KV group = the rows of k_proj and
  v_proj of one key/value head + the rows of q_proj of the query heads that read it + the
  matching columns of o_proj; with ``heads_mode="query_heads"`` one query head = its rows of
  q_proj + its columns of o_proj, removed the same number from every KV group.
- ``blocks``: a whole decoder block (every linear of it, role "whole").

``find_structures`` returns one ``StructureGroup`` per decoder block (for ``blocks``: one per
block with a single structure). Each member carries the index sets a structure owns, in the
layout of the contract (STRUCTURES_CONTRACT.md): ``index[s, :]`` = rows (producer) or
columns (consumer) of that layer's weight owned by structure s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import ConfigError, PruneRuntimeError
from .models import find_blocks, linear_layers

KINDS = ("channels", "heads", "blocks")
HEADS_MODES = ("kv_groups", "query_heads")
ROLES = ("producer", "consumer", "whole")


@dataclass(frozen=True)
class Member:
    """One layer of a structure group, as a structure score_fn gets it.

    Same fields as the contract's ``compiler/structure_exec.Member``; a score_fn reads the
    attributes only, so either class works.
    """
    name: str                         # full layer name, e.g. "model.layers.3.mlp.down_proj"
    role: str                         # "producer" (rows), "consumer" (columns) or "whole"
    stats: Mapping[str, Any]          # runtime/statcache.layer_stats of the dense layer
    index: torch.Tensor | None        # int64 (n_struct, k), None for "whole"


@dataclass(frozen=True)
class MemberSpec:
    """A member before statistics are attached: which layer and which rows/columns."""
    name: str
    role: str
    index: torch.Tensor | None        # int64 (n_struct, k)


@dataclass(frozen=True)
class StructureGroup:
    """The structures of one kind in one decoder block."""
    block: int
    kind: str
    count: int                        # n_struct in this block (1 for "blocks")
    members: tuple[MemberSpec, ...]
    kv_group: tuple[int, ...] | None = None  # query_heads: the KV group of each query head


@dataclass(frozen=True)
class AttentionShape:
    n_heads: int
    n_kv: int
    head_dim: int

    @property
    def rep(self) -> int:             # query heads per KV head
        return self.n_heads // self.n_kv


def check_kind(kind: str, heads_mode: str = "kv_groups") -> None:
    if kind not in KINDS:
        raise ConfigError("unknown {structure} {value!r}; choose one of {choices}",
                          value=kind, choices=", ".join(KINDS))
    if heads_mode not in HEADS_MODES:
        raise ConfigError("unknown {heads_mode} {value!r}; choose one of {choices}",
                          value=heads_mode, choices=", ".join(HEADS_MODES))


def check_ratio(ratio: float) -> float:
    if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0:
        raise ConfigError("{ratio} must be in [0, 1), got {value}", value=ratio,
                          hint="the fraction of the structures to remove; 1 would remove all of them")
    return float(ratio)


def _missing(kind: str, model: nn.Module, block: int, what: str) -> PruneRuntimeError:
    return PruneRuntimeError(
        f"{type(model).__name__} has no {kind} structure: decoder block {block} {what}",
        hint="structures are known for LLaMA/SmolLM2, Qwen2 and Gemma-3 style blocks "
             "(mlp.gate_proj/up_proj/down_proj, self_attn.q_proj/k_proj/v_proj/o_proj)")


def mlp_of(model: nn.Module, block: nn.Module, i: int) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    mlp = getattr(block, "mlp", None)
    parts = [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    if mlp is None or not all(isinstance(p, nn.Linear) for p in parts):
        raise _missing("channels", model, i, "has no gated MLP (mlp.gate_proj, up_proj, down_proj)")
    gate, up, down = parts
    if not (gate.out_features == up.out_features == down.in_features):
        raise _missing("channels", model, i, "has MLP widths that do not match")
    return gate, up, down


def attention_of(model: nn.Module, block: nn.Module, i: int) -> tuple[nn.Module, AttentionShape]:
    attn = getattr(block, "self_attn", None)
    parts = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    if attn is None or not all(isinstance(p, nn.Linear) for p in parts):
        raise _missing("heads", model, i, "has no self_attn with separate q/k/v/o projections")
    head_dim = getattr(attn, "head_dim", None)
    q, k, v, o = parts
    if not isinstance(head_dim, int) or q.out_features % head_dim or k.out_features % head_dim:
        raise _missing("heads", model, i, f"has no usable head_dim ({head_dim!r})")
    shape = AttentionShape(q.out_features // head_dim, k.out_features // head_dim, head_dim)
    if shape.n_kv == 0 or shape.n_heads % shape.n_kv or v.out_features != k.out_features \
            or o.in_features != q.out_features:
        raise _missing("heads", model, i, f"has inconsistent head counts {shape}")
    return attn, shape


def _units(n: int, size: int) -> torch.Tensor:
    """(n, size): unit s owns indices s*size .. s*size+size-1."""
    return torch.arange(n * size, dtype=torch.int64).view(n, size)


def find_structures(model: nn.Module, kind: str, heads_mode: str = "kv_groups") -> list[StructureGroup]:
    """One StructureGroup per decoder block; raises a clear error if the model lacks ``kind``."""
    check_kind(kind, heads_mode)
    blocks, prefix = find_blocks(model)
    groups: list[StructureGroup] = []
    for i, block in enumerate(blocks):
        p = f"{prefix}.{i}"
        if kind == "channels":
            gate, _, _ = mlp_of(model, block, i)
            idx = torch.arange(gate.out_features, dtype=torch.int64).view(-1, 1)  # (n, 1)
            members = (MemberSpec(f"{p}.mlp.gate_proj", "producer", idx),
                       MemberSpec(f"{p}.mlp.up_proj", "producer", idx),
                       MemberSpec(f"{p}.mlp.down_proj", "consumer", idx))
            groups.append(StructureGroup(i, kind, gate.out_features, members))
        elif kind == "heads":
            _, s = attention_of(model, block, i)
            a = f"{p}.self_attn"
            if heads_mode == "kv_groups":
                q_idx = _units(s.n_kv, s.rep * s.head_dim)      # (n_kv, rep*hd)
                kv_idx = _units(s.n_kv, s.head_dim)             # (n_kv, hd)
                members = (MemberSpec(f"{a}.q_proj", "producer", q_idx),
                           MemberSpec(f"{a}.k_proj", "producer", kv_idx),
                           MemberSpec(f"{a}.v_proj", "producer", kv_idx),
                           MemberSpec(f"{a}.o_proj", "consumer", q_idx))
                groups.append(StructureGroup(i, kind, s.n_kv, members))
            else:
                h_idx = _units(s.n_heads, s.head_dim)           # (n_heads, hd)
                members = (MemberSpec(f"{a}.q_proj", "producer", h_idx),
                           MemberSpec(f"{a}.o_proj", "consumer", h_idx))
                groups.append(StructureGroup(i, kind, s.n_heads, members,
                                             tuple(h // s.rep for h in range(s.n_heads))))
        else:
            members = tuple(MemberSpec(f"{p}.{n}", "whole", None) for n in linear_layers(block))
            groups.append(StructureGroup(i, kind, 1, members))
    if not groups:
        raise PruneRuntimeError(f"{type(model).__name__} has no decoder blocks to prune")
    return groups
