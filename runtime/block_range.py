"""``--structure-blocks START:END``: the decoder blocks structured removal may take from.

LLM-Pruner prunes only blocks 4..30 of LLaMA-7B: the first and last blocks are the most
sensitive (on SmolLM2-135M, 10% of MLP channels by magnitude_sp cost ppl 1173 from block 0
alone, 254 from block 29, 52-57 from any middle block; dense 50.8). The range reads like a
Python slice, half-open: ``3:-2`` is block 3 up to, not including, the second-to-last;
``:10``, ``4:`` and ``:`` work too. No torch: the CLI checks the text before loading anything.

    parse_block_range("3:-2").indices(30)   # (3, 4, ..., 27)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ..errors import ConfigError

_RANGE = re.compile(r"^\s*([+-]?\d+)?\s*:\s*([+-]?\d+)?\s*$")
_HINT = "START:END, half-open like a Python slice, e.g. 3:-2, 4:, :10 (END may be negative or left out)"


@dataclass(frozen=True)
class BlockRange:
    start: int | None
    end: int | None

    def __str__(self) -> str:
        return f"{'' if self.start is None else self.start}:{'' if self.end is None else self.end}"

    def indices(self, n: int) -> tuple[int, ...]:
        """The block indices of a model with ``n`` decoder blocks (a ConfigError if none, or past the end)."""
        for v in (self.start, self.end):
            if v is not None and not -n <= v <= n:
                raise ConfigError("{structure_blocks} {value} reaches past the model's {n} decoder blocks "
                                  "(indices go from -{n} to {n})", value=str(self), n=n, hint=_HINT)
        idx = tuple(range(n)[self.start:self.end])
        if not idx:
            raise ConfigError("{structure_blocks} {value} selects none of the model's {n} decoder blocks",
                              value=str(self), n=n, hint=_HINT)
        return idx


def parse_block_range(text: str) -> BlockRange:
    """``START:END`` as a BlockRange; a malformed or (already visibly) empty range is a ConfigError."""
    m = _RANGE.match(text) if isinstance(text, str) else None
    if m is None:
        raise ConfigError("{structure_blocks} {value!r} is not a block range", value=text, hint=_HINT)
    start, end = (None if g is None else int(g) for g in m.groups())
    if start is not None and end is not None and (start < 0) == (end < 0) and start >= end:
        raise ConfigError("{structure_blocks} {value} selects no block: END must come after START",
                          value=text.strip(), hint=_HINT)
    return BlockRange(start, end)


def resolve_blocks(spec: str | BlockRange | Iterable[int] | None, n: int) -> tuple[int, ...] | None:
    """The block indices ``spec`` names in a model of ``n`` blocks; None (every block) for None."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = parse_block_range(spec)
    if isinstance(spec, BlockRange):
        return spec.indices(n)
    items = list(spec)
    if not items or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in items):
        raise ConfigError("{structure_blocks} must name at least one of the blocks 0..{last}, got {value}",
                          value=items, last=n - 1)
    idx = tuple(sorted(set(items)))
    return idx


def describe_blocks(idx: Iterable[int]) -> str:
    """``blocks 3-27`` / ``blocks 0, 2, 5-7`` / ``block 4``: runs of consecutive indices."""
    idx = sorted(idx)
    runs: list[list[int]] = []
    for i in idx:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    text = ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
    return ("block " if len(idx) == 1 else "blocks ") + text
