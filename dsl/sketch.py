"""Sketches: formulas with typed holes, their type checker, and the refinement relation.

A *sketch* is a formula in which some subexpressions are holes: ``?Mat ?Row ?Col ?Scalar``
stand for any expression of that shape, ``?c`` for a number. The grammar already parses
holes (``dsl.ast.Hole``); ``prunedsl.parse`` rejects them. ``check_sketch`` (in
``dsl/sketch_check.py``, shared with the server) types a sketch with the checker's own rules
and a hole typed as its shape with sign ``pos``, the most permissive sign: a sketch
type-checks when *some* filling of its holes could (``sqrt(?Mat)`` is fine, ``sqrt(W)`` is not).

Refinement (what the LLM's answers must satisfy, docs/design.md §4):

- ``B`` refines ``A`` in **one step** when ``B`` is ``A`` with exactly one hole replaced by
  an expression of that hole's shape (a number for ``?c``), which may contain new holes.
- ``B`` is a **refinement** of ``A`` when it is ``A`` with one or more holes replaced that
  way: a composition of one-step refinements (holes are disjoint, so order is irrelevant).

The comparison is on *resolved* trees (library metrics inlined, ``abs(W)``/``|W|`` and
``norm(X)``/``‖X‖`` spelled alike), so an answer is not rejected for its spelling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from .ast import BinOp, Call, Expr, Hole, Neg, Num, children
from .printer import to_text
from .sketch_check import HOLE_SHAPES, check_sketch, has_holes, holes, parse_sketch
from ..errors import SearchError

__all__ = ["HOLE_SHAPES", "HOLE_DOCS", "NotARefinement", "Fill", "check_sketch", "has_holes", "holes",
           "parse_sketch", "match", "refinement", "is_refinement", "replace_at", "substitute"]

HOLE_DOCS = {
    "Mat": "any expression with one value per weight (out × in)",
    "Row": "any expression with one value per output channel (out × 1)",
    "Col": "any expression with one value per input channel (1 × in)",
    "Scalar": "any expression with one value per layer",
    "c": "a number",
}


class NotARefinement(SearchError):
    """An answer that is not a refinement of the node it claims to refine."""

    kind = "not a refinement"


@dataclass(frozen=True)
class Fill:
    """One hole of the refined sketch and what fills it."""

    kind: str                 # the hole's kind: Mat, Row, Col, Scalar, c
    path: tuple[int, ...]     # child indices from the sketch's root to the hole
    expr: Expr

    def text(self) -> str:
        return f"?{self.kind} := {to_text(self.expr)}"


def _fits(kind: str, b: Expr) -> bool:
    if kind == "c":
        return isinstance(b, Num)
    return b.type is not None and b.type.shape == HOLE_SHAPES[kind]


def _same_head(a: Expr, b: Expr) -> bool:
    """Equal node kind and own fields (not children, spans or types)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Num):
        return a.value == b.value and math.copysign(1, a.value) == math.copysign(1, b.value)  # -0 ≠ 0
    if isinstance(a, Call):
        return a.func == b.func and len(a.args) == len(b.args) and \
            [k for k, _ in a.kwargs] == [k for k, _ in b.kwargs]
    if isinstance(a, BinOp):
        return a.op == b.op
    if isinstance(a, Neg):
        return True
    own = [f.name for f in fields(a) if f.compare]
    return all(getattr(a, n) == getattr(b, n) for n in own)


def match(a: Expr, b: Expr) -> tuple[list[Fill] | None, str]:
    """``(fills, "")`` when ``b`` is ``a`` with holes filled (``[]`` if equal), else
    ``(None, why)``. Both trees resolved (``check_sketch``)."""
    out: list[Fill] = []
    stack: list[tuple[Expr, Expr, tuple[int, ...]]] = [(a, b, ())]
    while stack:
        x, y, path = stack.pop()
        if isinstance(x, Hole):
            if isinstance(y, Hole) and y.kind == x.kind:
                continue  # left open
            if not _fits(x.kind, y):
                what = "a number" if x.kind == "c" else f"a {y.type.shape if y.type else '?'}"
                return None, (f"the hole ?{x.kind} cannot hold `{to_text(y)}` ({what}); it takes "
                              f"{HOLE_DOCS[x.kind]}")
            out.append(Fill(x.kind, path, y))
            continue
        if isinstance(x, Neg) and isinstance(x.operand, Hole) and x.operand.kind == "c" \
                and isinstance(y, Num):  # -?c filled with 2 is checked as the number -2
            out.append(Fill("c", path + (0,), Num(-y.value)))
            continue
        if not _same_head(x, y):
            return None, (f"outside its holes the sketch reads `{to_text(x)}` where the answer "
                          f"has `{to_text(y)}`; only holes may change")
        stack.extend((cx, cy, path + (i,)) for i, (cx, cy) in
                     reversed(list(enumerate(zip(children(x), children(y))))))
    return sorted(out, key=lambda f: f.path), ""


def refinement(a: Expr, b: Expr) -> list[Fill] | None:
    """The fills that turn sketch ``a`` into ``b`` (at least one), or None."""
    fills, _ = match(a, b)
    return fills or None


def is_refinement(a: Expr, b: Expr, one_step: bool = False) -> bool:
    fills = refinement(a, b)
    return fills is not None and (not one_step or len(fills) == 1)


def replace_at(e: Expr, path: tuple[int, ...], new: Expr) -> Expr:
    """``e`` with the subtree at ``path`` (child indices, as in ``Fill.path``) replaced."""
    if not path:
        return new
    i, rest = path[0], path[1:]
    if isinstance(e, Neg):
        return replace(e, operand=replace_at(e.operand, rest, new))
    if isinstance(e, BinOp):
        return replace(e, left=replace_at(e.left, rest, new)) if i == 0 else \
            replace(e, right=replace_at(e.right, rest, new))
    if isinstance(e, Call) and i < len(e.args):
        args = list(e.args)
        args[i] = replace_at(args[i], rest, new)
        return replace(e, args=tuple(args))
    raise IndexError(f"no child {i} in {to_text(e)}")


def substitute(a: Expr, fills: list[Fill]) -> Expr:
    """Apply ``fills`` to sketch ``a`` (the inverse of ``match``)."""
    for f in fills:
        a = replace_at(a, f.path, f.expr)
    return a
