"""What each LLM request gave: lines, parsed, type-checked, new formulas (the report's
"LLM replies" table, and the measure to compare prompt views or proposer models by).

    s = ReplyStats(round=3, lines=4, parsed=4, typed=3, formulas=2)
    s.duplicates += 1                 # the engine found one's canonical form seen before
    reply_markdown([s, ...])          # totals and shares per request

A *valid new* formula is a complete formula handed to the engine (not already a node of
the graph) whose canonical form the engine had not seen (``Outcome.duplicate_of`` is
empty) and whose evaluation did not fail (non-finite scores, ...): ``formulas -
duplicates - failed``. Outcomes count when the engine observes them, so formulas still
pending count as new until then.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ReplyStats:
    round: int            # the proposer's round (one request, one reply)
    lines: int = 0        # formula or sketch lines in the reply (the node line not counted)
    parsed: int = 0       # lines the lark parser reads
    typed: int = 0        # lines that also type-check (a formula, or a sketch as a sketch)
    refines: int = 0      # typed lines that refine a node of the graph
    formulas: int = 0     # complete formulas handed to the engine (not in the graph before)
    duplicates: int = 0   # of those: canonical form seen before (the engine's deduplication)
    failed: int = 0       # of those: the evaluation failed (e.g. non-finite scores)

    @property
    def new(self) -> int:
        """Valid new formulas (module docstring)."""
        return self.formulas - self.duplicates - self.failed

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ReplyStats":
        return cls(**{k: int(v) for k, v in data.items() if k in cls.__dataclass_fields__})


def _share(a: int, b: int) -> str:
    return f"{a} / {b} ({100 * a / b:.0f}%)" if b else f"{a} / 0"


def reply_rows(stats: list[ReplyStats]) -> list[list[str]]:
    """``[what, value]`` rows: totals over the requests and the shares that compare runs."""
    n = len(stats)
    lines = sum(s.lines for s in stats)
    formulas = sum(s.formulas for s in stats)
    new = sum(s.new for s in stats)
    return [["requests (replies)", str(n)],
             ["replies with at least one valid new formula", _share(sum(s.new > 0 for s in stats), n)],
             ["lines that parse", _share(sum(s.parsed for s in stats), lines)],
             ["lines that type-check", _share(sum(s.typed for s in stats), lines)],
             ["lines that refine a node", _share(sum(s.refines for s in stats), lines)],
             ["complete formulas handed to the engine", str(formulas)],
             ["failed evaluations among them", str(sum(s.failed for s in stats))],
             ["duplicates among them (canonical form seen before)", str(sum(s.duplicates for s in stats))],
             ["valid new formulas", _share(new, formulas)],
             ["valid new formulas per request", f"{new / n:.2f}" if n else "–"]]


def reply_markdown(stats: list[ReplyStats]) -> str:
    from .hall import markdown_table
    return markdown_table(["", ""], reply_rows(stats))
