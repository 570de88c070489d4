"""The reply formats a constrained request produces, and checking them.

    split_reply("node 3\\n|W| * ?Col")      # (3, ['|W| * ?Col'], []): llm_contract's reader
    check_reply("sqrt(W)", "formula")       # (True, False, 'type error: ...')
    check_completion("node 1\\nsqrt(W)\\n|W| * ?Col", "reply")   # Check(ok=True, lines=2, valid_lines=1, ...)

``check_completion`` is what the server's resampling (``generate.py``) asks:

- ``formula``: the reply is one formula; it is acceptable when ``prunedsl.parse`` (the
  type checker) accepts it.
- ``reply``: each line is a formula or a sketch (typed holes); a line checks when
  ``prunedsl.parse`` accepts it, or, with holes, when the sketch type-checks with the
  rules of ``dsl/sketch_check.py`` (a hole is an expression of its shape with the most
  permissive sign; ``?c`` may be an exponent) and is not a Scalar. The reply is
  acceptable when *at least one* line checks. Requiring every line would throw away
  good lines with a bad neighbour and, at ~85% valid lines, take several full replies of
  up to 8 lines each; the search reads a reply line by line anyway and sends the lines
  that fail back to the model as feedback (its repair loop). What failed is reported
  (``Check.valid_lines`` of ``Check.lines``), never hidden.

In both modes a line that is a list of numbers rather than a metric does not check
(``reply_guard.copied_numbers`` without the prompt's scores: more than 5 significant
digits, more than 4 numbers): Qwen2.5-Coder 0.5B filled the grammar with them
(docs/prompt_cache.md), and they type-check.

``sketches`` (the request's ``prunedsl_sketches``: the sketches the prompt offers, by node
id) makes a reply answer the question it was asked: its ``node <id>`` line must name one
of them, a line checks only if it also refines that sketch (``dsl/sketch.refinement``:
only the holes change), and the reply is acceptable only with at least one *complete*
formula among its checked lines (what the search evaluates; sketch lines are kept, but a
reply of sketches alone is sampled again). ``seen`` (``prunedsl_seen``: the canonical forms
of the formulas the search already has, under its comparison group) rejects a complete
line that ranks weights like one of them (``|W| ^ 0.5`` is ``|W|``): Qwen 0.5B, once its
grammar and check held it to a sketch, answered ``|W| ^ 0.5`` ten times in a row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..dsl.ast import Expr
from ..dsl.parser import parse_expr
from ..dsl.printer import to_text
from ..dsl.sketch import match, parse_sketch
from ..dsl.sketch_check import check_sketch, has_holes
from ..dsl.types import SCALAR
from ..errors import DSLTypeError, PruneDSLError, ReplyRejected
from ..llm_contract import split_reply
from ..reply_guard import copied_numbers


@dataclass(frozen=True)
class Check:
    ok: bool                  # acceptable (see the module docstring)
    error: str | None         # the first problem (None when every line checks)
    lines: int = 1            # formulas (or sketches) in the reply
    valid_lines: int = 0      # of them, those that check (type, numbers, sketch, not seen)


@dataclass(frozen=True)
class Seen:
    """Formulas a reply should not repeat: canonical forms under a comparison group."""
    group: str
    forms: frozenset[str]


def check_line(line: str, sketch: Expr | None = None, seen: Seen | None = None) -> str | None:
    """None when ``line`` (a formula, or a sketch with holes) type-checks, is no list of
    numbers, (given ``sketch``) refines it and (given ``seen``) is not a formula seen
    before; else the error."""
    from ..api import parse
    try:
        tree = parse_expr(line)
        if not has_holes(tree):
            metric = parse(line)
            expr = metric.expr
            form = metric.canonical(seen.group) if seen is not None else None
            if form is not None and form in seen.forms:
                raise ReplyRejected(f"`{line}` ranks weights like a formula the search already has "
                                    f"(`{form}`); write a new one")
        else:
            expr = check_sketch(tree)
            if expr.type.shape == SCALAR:
                raise DSLTypeError("a sketch of a Scalar cannot become a metric", hint="use ?Mat, W, |W| or G in it")
        if (problem := copied_numbers(tree, frozenset())) is not None:
            raise ReplyRejected(problem)
        if sketch is not None:
            fills, why = match(sketch, expr)
            if not fills:
                raise ReplyRejected(f"`{line}` does not refine the sketch `{to_text(sketch)}`: "
                                   f"{why or 'no hole is filled'}")
    except PruneDSLError as err:
        return err.with_source(line).render()
    return None


def parse_sketches(sketches: Mapping[int, str]) -> dict[int, Expr]:
    """The offered sketches, parsed (``PruneDSLError`` naming the node that does not parse)."""
    out = {}
    for node, text in sketches.items():
        try:
            out[int(node)] = parse_sketch(text)
        except PruneDSLError as err:
            raise type(err)(f"sketch of node {node}: {err.message}", hint=err.hint) from None
    return out


def check_completion(text: str, mode: str, sketches: Mapping[int, Expr] | None = None,
                     seen: Seen | None = None) -> Check:
    """Whether a constrained reply is acceptable (module docstring), with what failed.
    ``sketches``: the offered sketches by node id (``parse_sketches``), reply mode only;
    ``seen``: the formulas already in the search."""
    node, lines, _ = split_reply(text) if mode != "formula" else (None, [text], [])
    if not lines:
        return Check(False, "no formula in the reply", 0, 0)
    sketch = None
    if sketches:
        if node not in sketches:
            offered = ", ".join(f"node {i}" for i in sorted(sketches))
            named = "no `node <id>` line" if node is None else f"node {node} is not offered"
            return Check(False, f"{named}: the reply must name one of {offered}", len(lines), 0)
        sketch = sketches[node]
    errors = [check_line(line, sketch, seen) for line in lines]
    first = next((e for e in errors if e is not None), None)
    valid = sum(e is None for e in errors)
    if mode == "formula":
        ok = valid == len(lines)
    elif sketches:
        ok = any(e is None and not has_holes(parse_expr(line)) for line, e in zip(lines, errors))
        if not ok and first is None:
            first = "no complete formula: every line keeps a hole"
    else:
        ok = valid > 0
    return Check(ok, first, len(lines), valid)


def check_reply(text: str, mode: str) -> tuple[bool, bool, str | None]:
    """``(parses, type_checks, first error)`` of a reply: each line with ``parse_expr``,
    then (``type_checks``) every line with the type checker, sketches as sketches."""
    if mode == "formula":
        lines = [text]
    else:
        _, lines, _ = split_reply(text)
        if not lines:
            return False, False, "no formula in the reply"
    try:
        for line in lines:
            parse_expr(line)
    except PruneDSLError as err:
        return False, False, err.render()
    c = check_completion(text, mode)
    return True, c.valid_lines == c.lines, c.error
