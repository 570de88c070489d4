"""Members of coupled structures and the reduction of their per-weight scores (torch only;
no transformers). The contract with the structure-removal runtime: docs/structures.md.

A *member* is one linear layer of a structure kind: a producer owns ROWS of its weight
(gate/up, q/k/v), a consumer owns COLUMNS (down, o), a "whole" member (blocks) owns all
of it. ``index[s, :]`` lists the rows (columns) structure ``s`` owns. Reducing a member's
per-weight scores (out, in) for every structure at once:

    producer:  scores[index]      (n, k, in)  → sum/max over (k, in)   → (n,)
    consumer:  scores[:, index]   (out, n, k) → sum/max over (out, k)  → (n,)
    whole:     scores             (out, in)   → sum/max over all       → (1,)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..dsl.structure_vocab import CONSUMER, PRODUCER, ROLES, WHOLE_MEMBER
from ..errors import CompileError


@dataclass(frozen=True)
class Member:
    name: str                      # full layer name, e.g. "model.layers.3.mlp.down_proj"
    role: str                      # "producer" (owns rows), "consumer" (owns columns), "whole" (blocks)
    stats: Mapping[str, Any]       # what a per-weight metric gets for this layer (W (out, in), ...)
    index: torch.Tensor | None     # int64 (n_struct, k): rows/columns structure s owns; None for "whole"


def check_members(members: Sequence[Member]) -> int:
    """Validate the members and return the number of structures they describe."""
    if not members:
        raise CompileError("a structure score needs at least one member layer")
    counts = set()
    for m in members:
        if m.role not in ROLES:
            raise CompileError(f"member {m.name} has role {m.role!r}; expected one of {', '.join(ROLES)}")
        if m.role == WHOLE_MEMBER:
            if m.index is not None:
                raise CompileError(f"member {m.name} is 'whole' (a block) and takes no index")
            counts.add(1)
            continue
        idx = m.index
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype != torch.int64 or idx.shape[1] == 0:
            got = f"shape {tuple(idx.shape)}, {idx.dtype}" if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise CompileError(f"member {m.name} ({m.role}) needs an int64 index of shape (n_struct, k ≥ 1), "
                               f"got {got}")
        counts.add(idx.shape[0])
    if len(counts) != 1:
        raise CompileError("the members disagree on the number of structures: " + ", ".join(
            f"{m.name}: {1 if m.index is None else m.index.shape[0]}" for m in members))
    return counts.pop()


def owned_extent(member: Member, out_in: tuple[int, int]) -> int:
    """How many rows (producer) or columns (consumer) the index may address."""
    return out_in[0] if member.role == PRODUCER else out_in[1]


def reduce_member(scores: torch.Tensor, member: Member, reducer: str) -> torch.Tensor:
    """``(n_struct,)``: the member's per-weight ``scores`` (out, in) reduced over each
    structure's owned entries (``reducer``: "sum" or "max")."""
    if member.role == WHOLE_MEMBER:
        return (scores.sum() if reducer == "sum" else scores.amax()).reshape(1)
    idx = member.index.to(scores.device)
    extent = owned_extent(member, tuple(scores.shape))
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= extent):
        axis = "rows" if member.role == PRODUCER else "columns"
        raise CompileError(f"member {member.name}: index out of range for {extent} {axis} "
                           f"(min {int(idx.min())}, max {int(idx.max())})")
    if member.role == PRODUCER:
        owned, dims = scores[idx], (1, 2)           # (n, k, in)
    elif member.role == CONSUMER:
        owned, dims = scores[:, idx], (0, 2)        # (out, n, k)
    else:  # pragma: no cover - check_members rejects other roles
        raise CompileError(f"unknown role {member.role!r}")
    return owned.sum(dims) if reducer == "sum" else owned.amax(dims)
