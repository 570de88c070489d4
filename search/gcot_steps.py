"""One-production refinement chains of the GCoT graph (``search/gcot.py``, module doc).

    one_production_steps(parse_sketch("|W| * ?Col"), parse_sketch("|W| * ‖X‖ ^ 0.5"))
    # [|W| * ?Col ^ ?c, |W| * ‖X‖ ^ ?c, |W| * ‖X‖ ^ 0.5]

A refinement that fills several holes, or one hole with a deep expression, is split into
steps that each replace one hole by one grammar production: holes left to right, each
expanded top-down. Intermediate sketches that do not type-check are left out.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..dsl.ast import Expr, Hole, Num, children
from ..dsl.printer import to_text
from ..errors import PruneDSLError
from ..dsl.sketch import HOLE_SHAPES, match, parse_sketch, replace_at

if TYPE_CHECKING:
    from .gcot import Edge

SHAPE_HOLES = {shape: kind for kind, shape in HOLE_SHAPES.items() if kind != "c"}


def one_production_steps(a: Expr, b: Expr) -> list[Expr]:
    """The sketches from ``a`` (excluded) to ``b`` (included, last), one production
    each; intermediate ones that do not type-check are left out (module doc)."""
    fills, _ = match(a, b)
    if not fills:
        return [b]
    out: list[Expr] = []
    cur = a
    work = [(f.path, f.expr) for f in reversed(fills)]   # a stack: holes left to right
    while work:
        path, e = work.pop()
        kids = children(e)
        if isinstance(e, Hole) or not kids:
            head = e
        else:
            head, todo = e, []
            for i, k in enumerate(kids):
                if isinstance(k, Hole):
                    continue  # a hole the answer left open stays
                kind = "c" if isinstance(k, Num) else SHAPE_HOLES.get(k.type.shape if k.type else "")
                if kind is None:
                    return [b]
                try:
                    head = replace_at(head, (i,), Hole(kind))
                except IndexError:  # e.g. a keyword argument: no one-production split
                    return [b]
                todo.append((path + (i,), k))
            work.extend(reversed(todo))
        cur = replace_at(cur, path, head)
        out.append(cur)
    if not out or to_text(out[-1]) != to_text(b):
        return [b]
    checked = []
    for mid in out[:-1]:
        try:
            checked.append(parse_sketch(to_text(mid)))  # resolved and typed, or left out
        except PruneDSLError:
            continue
    return checked + [b]


def is_one_step(edge: "Edge") -> bool:
    """Is ``edge`` a single production (one hole, filled by a leaf or by one operator
    or function over new holes)?"""
    if len(edge.fills) != 1:
        return False
    try:
        e = parse_sketch(edge.fills[0].split(" := ", 1)[1])
    except (PruneDSLError, IndexError):
        return False
    return all(isinstance(k, Hole) for k in children(e))
