"""Which structures to remove, from one score per structure (higher = keep).

Allocation across layers:

- ``uniform`` (default): the same count in every block (``round(ratio * n)``), so every
  layer keeps one width and plain transformers loads the saved model (one
  ``intermediate_size`` / head count in the config). With ``heads_mode="query_heads"`` the
  same number of query heads goes from every KV group, so GQA stays valid.
- ``global``: one ranking over all blocks' structures; the lowest ``round(ratio * total)``
  go, except that every block keeps at least its best structure (a block is never emptied
  by the ranking; the next-lowest structure elsewhere goes instead). Widths then differ per
  block: a Hugging Face config holds one width, so the saved model is a prunedsl-format
  checkpoint (``width_record.py``, ``structured_checkpoint.py``; docs/structured.md).

``blocks`` (``--structure-blocks START:END``, ``block_range.py``): only these blocks lose
structures, the others keep all of theirs; the ratio applies to the blocks inside (uniform:
``round(ratio * n)`` in each of them; global: one ranking over their structures). Widths then
differ per block too.

For ``blocks`` the ranking is always over blocks: the ``count`` (or ``round(ratio * L)``)
lowest-scoring blocks go.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from ..errors import ConfigError, NonFiniteScoreError, PruneRuntimeError
from .block_range import describe_blocks
from .structures import StructureGroup, check_ratio

ALLOCATIONS = ("uniform", "global")
_NOUN = {"channels": "MLP channel", "heads": "attention head", "blocks": "decoder block"}


@dataclass(frozen=True)
class RemovalPlan:
    kind: str
    heads_mode: str
    allocation: str
    keep: tuple[tuple[int, ...], ...]   # per block: kept structure indices (blocks: one tuple of kept blocks)
    total: tuple[int, ...]              # per block: structures before removal (blocks: (L,))
    blocks: tuple[int, ...] | None = None   # the blocks that could lose structures; None: all

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(len(k) for k in self.keep)

    @property
    def uniform(self) -> bool:
        return len(set(self.widths)) <= 1

    @property
    def removed(self) -> int:
        return sum(self.total) - sum(self.widths)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["keep"] = [list(k) for k in self.keep]
        d["total"] = list(self.total)
        d["blocks"] = None if self.blocks is None else list(self.blocks)
        d["removed_per_block"] = [t - w for t, w in zip(self.total, self.widths)]
        d["removed"] = self.removed
        d["widths"] = list(self.widths)
        d["uniform"] = self.uniform
        return d


def _check_scores(groups: Sequence[StructureGroup], scores: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if len(scores) != len(groups):
        raise PruneRuntimeError(f"got {len(scores)} score vectors for {len(groups)} blocks")
    out = []
    for g, s in zip(groups, scores):
        s = torch.as_tensor(s).detach().reshape(-1).to(torch.float64)
        if s.numel() != g.count:
            raise PruneRuntimeError(f"block {g.block}: the structure score gave {s.numel()} values, "
                                    f"expected one per {_NOUN[g.kind]} ({g.count})")
        if not bool(torch.isfinite(s).all()):
            raise NonFiniteScoreError(f"block {g.block}: the structure score is not finite "
                                      f"for {int((~torch.isfinite(s)).sum())} of {g.count} structures")
        out.append(s)
    return out


def _lowest(s: torch.Tensor, n: int) -> set[int]:
    """Indices of the n lowest scores; ties go by position (stable sort)."""
    return set(torch.sort(s, stable=True).indices[:n].tolist())


def _keep(n: int, drop: set[int]) -> tuple[int, ...]:
    return tuple(i for i in range(n) if i not in drop)


def select_removal(groups: Sequence[StructureGroup], scores: Sequence[torch.Tensor], *,
                   ratio: float | None = None, count: int | None = None,
                   allocation: str = "uniform", heads_mode: str = "kv_groups",
                   blocks: Sequence[int] | None = None) -> RemovalPlan:
    """The plan removing ``ratio`` of the structures (or ``count`` per block / blocks in all);
    ``blocks``: the block indices that may lose structures (None: every block)."""
    if allocation not in ALLOCATIONS:
        raise ConfigError("unknown {allocation} {value!r}; choose one of {choices}",
                          value=allocation, choices=", ".join(ALLOCATIONS))
    if (ratio is None) == (count is None):
        raise ConfigError("give either {ratio} or a count of structures to remove, not both or neither")
    if ratio is not None:
        check_ratio(ratio)
    elif count < 0:
        raise ConfigError("the count of structures to remove must be >= 0, got {value}", value=count)
    scores = _check_scores(groups, scores)
    kind = groups[0].kind
    if blocks is not None:
        blocks = _check_blocks(blocks, len(groups), kind)
    if kind == "blocks":
        s = torch.cat(scores)
        n = count if count is not None else round(ratio * s.numel())
        if n >= s.numel():
            raise ConfigError("removing {value} of the model's {total} decoder blocks would leave none",
                              value=n, total=s.numel(), hint="remove fewer blocks")
        return RemovalPlan(kind, heads_mode, "global", (_keep(s.numel(), _lowest(s, n)),), (s.numel(),))
    if allocation == "global":
        if heads_mode == "query_heads":
            raise ConfigError("global allocation of query heads is not supported: each KV group "
                              "must keep the same number of query heads",
                              hint="use uniform allocation, or heads_mode kv_groups")
        return _global(groups, scores, ratio, count, heads_mode, blocks)
    keep = []
    where = "" if blocks is None else f" (inside the pruned range: {describe_blocks(blocks)})"
    for g, s in zip(groups, scores):
        if blocks is not None and g.block not in blocks:
            keep.append(tuple(range(g.count)))   # outside the range: every structure stays
            continue
        if g.kv_group is not None:   # query heads: the same number from every KV group
            keep.append(_keep_per_kv_group(g, s, ratio, count, where))
            continue
        n = count if count is not None else round(ratio * g.count)
        if n >= g.count:
            raise ConfigError("removing {value} of the {total} {noun}s of decoder block {block}{where} "
                              "would remove every one of them", value=n, total=g.count,
                              noun=_NOUN[kind] if kind != "heads" else "KV group",
                              block=g.block, where=where, hint="lower {ratio}")
        keep.append(_keep(g.count, _lowest(s, n)))
    return RemovalPlan(kind, heads_mode, "uniform", tuple(keep), tuple(g.count for g in groups), blocks)


def _check_blocks(blocks: Sequence[int], n: int, kind: str) -> tuple[int, ...]:
    if kind == "blocks":
        raise ConfigError("{structure_blocks} applies to channels and heads, not to removing whole blocks",
                          hint="leave it out; the block ranking is over every block")
    items = list(blocks)
    if not items or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in items):
        raise ConfigError("the blocks to prune must be at least one of the block indices 0..{last}, "
                          "got {value}", value=items, last=n - 1)
    return tuple(sorted(set(items)))


def _keep_per_kv_group(g: StructureGroup, s: torch.Tensor, ratio: float | None,
                       count: int | None, where: str = "") -> tuple[int, ...]:
    n_kv = max(g.kv_group) + 1
    rep = g.count // n_kv
    if count is not None and count % n_kv:
        raise ConfigError("removing {value} query heads from block {block} cannot take the same number "
                          "from each of its {n_kv} KV groups", value=count, block=g.block, n_kv=n_kv)
    per = count // n_kv if count is not None else round(ratio * rep)
    if per >= rep:
        raise ConfigError("removing {value} of the {rep} query heads of each KV group of decoder "
                          "block {block}{where} would remove every head of the group",
                          value=per, rep=rep, block=g.block, where=where, hint="lower {ratio}")
    drop: set[int] = set()
    for kv in range(n_kv):
        heads = [h for h in range(g.count) if g.kv_group[h] == kv]
        drop |= {heads[j] for j in _lowest(s[heads], per)}
    return _keep(g.count, drop)


def _global(groups: Sequence[StructureGroup], scores: list[torch.Tensor], ratio: float | None,
            count: int | None, heads_mode: str, blocks: tuple[int, ...] | None) -> RemovalPlan:
    ranked = [b for b, g in enumerate(groups) if blocks is None or g.block in blocks]
    total = sum(groups[b].count for b in ranked)
    n = count if count is not None else round(ratio * total)
    flat = torch.cat([scores[b] for b in ranked])
    owner = torch.cat([torch.full((groups[b].count,), b) for b in ranked])
    local = torch.cat([torch.arange(groups[b].count) for b in ranked])
    left = [g.count for g in groups]
    drop: list[set[int]] = [set() for _ in groups]
    for j in torch.sort(flat, stable=True).indices.tolist():
        if n == 0:
            break
        b = int(owner[j])
        if left[b] > 1:     # every block keeps its best structure
            drop[b].add(int(local[j]))
            left[b] -= 1
            n -= 1
    if n > 0:
        where = "" if blocks is None else f" of the pruned range ({describe_blocks(blocks)})"
        raise ConfigError("removing {value} of {total} structures{where} would empty every block",
                          value=count if count is not None else round(ratio * total), total=total,
                          where=where, hint="lower {ratio}")
    keep = tuple(_keep(g.count, d) for g, d in zip(groups, drop))
    return RemovalPlan(groups[0].kind, heads_mode, "global", keep, tuple(g.count for g in groups), blocks)
